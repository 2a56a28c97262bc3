"""OpenTelemetry tracing: the span trees that the real service code creates, recorded by the SDK's
in-memory exporter, plus settings, propagation, the API middleware and the doctor's check.

Backends are small fakes (no I/O); the span code under test is the production code in
IngestionService, Retriever, AnswerService and perimeter.tracing."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracer, SpanKind, StatusCode
from pydantic import ValidationError

from perimeter.domain import (
    ChunkRecord,
    Completion,
    DocumentRecord,
    DocumentStatus,
    EncodedText,
    ParsedDocument,
    ParsedElement,
    ScoredChunk,
    SearchFilter,
    Usage,
)
from perimeter.ingest.errors import ParseError
from perimeter.ingest.pipeline import IngestionService
from perimeter.logs import request_id_var
from perimeter.retrieval.answer import AnswerService
from perimeter.retrieval.search import Retriever
from perimeter.settings import Settings, TracingSettings
from perimeter.tracing import (
    Tracing,
    TracingMiddleware,
    build_tracer,
    continue_trace,
    inject_trace_headers,
    parse_headers,
    trace_headers_of,
)

pytestmark = pytest.mark.unit

REMOTE_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
REMOTE_SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{REMOTE_TRACE_ID}-{REMOTE_SPAN_ID}-01"


# -- fakes for the backends (the span code under test is real) ----------------------------------


class FakeEmbedder:
    dimension = 2
    has_sparse = False

    def warm_up(self) -> None:
        pass

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def encode_documents(self, texts: Sequence[str]) -> list[EncodedText]:
        return [EncodedText(dense=[1.0, float(len(t))]) for t in texts]

    def encode_queries(self, texts: Sequence[str]) -> list[EncodedText]:
        return [EncodedText(dense=[1.0, 0.0]) for _ in texts]


def scored(i: int, dense: float = 0.9) -> ScoredChunk:
    return ScoredChunk(
        point_id=f"p{i}",
        document_id="doc-1",
        chunk_index=i,
        text=f"The boiler is serviced every March, says passage {i}.",
        filename="manual.txt",
        page=1,
        section=None,
        score=1.0 / (i + 1),
        dense_score=dense,
    )


class FakeStore:
    def __init__(self) -> None:
        self.upserts: list[list[ChunkRecord]] = []

    def count_document(self, tenant_id: str, document_id: str) -> int:
        return 0

    def upsert(self, records: Sequence[ChunkRecord]) -> None:
        self.upserts.append(list(records))

    def delete_document(self, tenant_id: str, document_id: str) -> None:
        pass

    def delete_document_tail(self, tenant_id: str, document_id: str, keep: int) -> None:
        pass

    def hybrid_search(self, dense: Any, sparse: Any, flt: Any, limit: int, prefetch: int) -> Any:
        return [scored(i) for i in range(limit)]

    def dense_search(self, dense: Any, flt: Any, limit: int) -> list[ScoredChunk]:
        return [scored(i) for i in range(limit)]


class FakeReranker:
    def warm_up(self) -> None:
        pass

    def rerank(self, question: str, chunks: Sequence[ScoredChunk], top_k: int) -> Any:
        return list(reversed(chunks))[:top_k]


class FakeParser:
    def __init__(self, paragraphs: int = 10, fail: bool = False) -> None:
        self.paragraphs = paragraphs
        self.fail = fail

    def parse(
        self, path: Path, content_type: str, filename: str, on_page: object = None
    ) -> ParsedDocument:
        if self.fail:
            raise ParseError("the PDF is encrypted")
        elements = [
            ParsedElement(f"Paragraph {i} has exactly seven words.", "NarrativeText", page=1)
            for i in range(self.paragraphs)
        ]
        return ParsedDocument(elements, pages=3)


class FakeMetadata:
    def __init__(self, doc: DocumentRecord) -> None:
        self.doc = doc
        self.statuses: list[DocumentStatus] = []

    def get_document_any_tenant(self, document_id: str) -> DocumentRecord | None:
        return self.doc if document_id == self.doc.id else None

    def record_attempt(self, document_id: str) -> int:
        return 1

    def set_status(self, document_id: str, status: DocumentStatus, **_: Any) -> bool:
        self.statuses.append(status)
        return True

    def set_job_progress(self, document_id: str, progress: float) -> None:
        pass


class FakeBlobs:
    def path_for(self, content_hash: str) -> Path:
        return Path(__file__)  # exists; the fake parser does not read it


class FakeLLM:
    model_name = "smollm2-135m-instruct"

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def complete(self, messages: Any, max_tokens: int | None = None, **_: Any) -> Completion:
        if self.fail:
            raise ConnectionError("LLM down")
        return Completion(
            text="The boiler is serviced every March [1].",
            model="smollm2-135m-instruct-q8",
            usage=Usage(prompt_tokens=120, completion_tokens=9),
        )

    def stream(self, messages: Any, max_tokens: int | None = None, **_: Any) -> Iterator[str]:
        yield "The boiler is serviced "
        if self.fail:
            raise ConnectionError("LLM went away")
        yield "every March [1]."

    def ping(self) -> bool:
        return True


def document(doc_id: str = "doc-1") -> DocumentRecord:
    now = datetime.now(UTC)
    return DocumentRecord(
        id=doc_id,
        tenant_id="acme",
        content_hash="ab" * 32,
        filename="manual.txt",
        content_type="text/plain",
        size_bytes=100,
        status=DocumentStatus.QUEUED,
        error=None,
        chunk_count=0,
        pages=None,
        metadata={},
        attempts=0,
        created_at=now,
        updated_at=now,
    )


@pytest.fixture
def recorded() -> Iterator[tuple[Tracing, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    tracing = build_tracer(TracingSettings(enabled=True, exporter="console"), exporter=exporter)
    yield tracing, exporter
    tracing.shutdown()


def by_name(spans: Sequence[ReadableSpan]) -> dict[str, list[ReadableSpan]]:
    out: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        out.setdefault(span.name, []).append(span)
    return out


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def ingestion(tracing: Tracing, parser: FakeParser, store: FakeStore) -> IngestionService:
    return IngestionService(
        metadata=FakeMetadata(document()),  # type: ignore[arg-type]
        blobs=FakeBlobs(),  # type: ignore[arg-type]
        parser=parser,
        embedder=FakeEmbedder(),
        sparse_encoder=None,
        store=store,  # type: ignore[arg-type]
        max_tokens=8,
        overlap_tokens=0,
        embed_batch_size=1,  # 4 chunks per embed + upsert batch
        tracer=tracing.tracer,
    )


# -- settings -------------------------------------------------------------------------------------


def test_tracing_is_off_by_default_and_then_a_noop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PERIMETER_TRACING__ENABLED", raising=False)
    settings = Settings()
    assert settings.tracing.enabled is False
    tracing = build_tracer(settings.tracing)
    assert not tracing.enabled and tracing.provider is None
    assert isinstance(tracing.tracer, NoOpTracer)
    with tracing.tracer.start_as_current_span("ingest.process") as span:
        assert not span.is_recording()
        # Nothing to propagate either: the task message gets no trace headers.
        assert inject_trace_headers() == {}
    tracing.shutdown()  # harmless


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERIMETER_TRACING__ENABLED", "true")
    monkeypatch.setenv("PERIMETER_TRACING__ENDPOINT", "http://otel-collector:4318/v1/traces")
    monkeypatch.setenv("PERIMETER_TRACING__SAMPLE_RATIO", "0.25")
    monkeypatch.setenv("PERIMETER_TRACING__HEADERS", "authorization=Bearer s3cret")
    t = Settings().tracing
    assert (t.enabled, t.exporter, t.sample_ratio) == (True, "otlp-http", 0.25)
    assert t.endpoint == "http://otel-collector:4318/v1/traces"
    assert t.headers is not None and "s3cret" not in repr(t)
    assert parse_headers(t.headers.get_secret_value()) == {"authorization": "Bearer s3cret"}


def test_otlp_without_an_endpoint_is_refused_with_a_clear_error() -> None:
    with pytest.raises(ValidationError, match="PERIMETER_TRACING__ENDPOINT"):
        TracingSettings(enabled=True)
    with pytest.raises(ValidationError, match="not an http"):
        TracingSettings(enabled=True, endpoint="otel-collector:4318")
    with pytest.raises(ValidationError):
        TracingSettings(sample_ratio=1.5)
    # Console needs no endpoint, and a disabled otlp exporter needs none yet.
    assert TracingSettings(enabled=True, exporter="console").endpoint is None
    assert TracingSettings(enabled=False).endpoint is None


def test_bad_header_pairs_are_refused() -> None:
    assert parse_headers(None) == {}
    assert parse_headers(" a=1 , B = two ,") == {"a": "1", "b": "two"}
    with pytest.raises(ValueError, match="name=value"):
        parse_headers("novalue")


# -- ingestion ------------------------------------------------------------------------------------


def test_ingestion_span_tree(recorded: tuple[Tracing, InMemorySpanExporter]) -> None:
    tracing, exporter = recorded
    store = FakeStore()
    outcome = ingestion(tracing, FakeParser(paragraphs=10), store).process("doc-1")
    assert outcome.status == "indexed"
    chunks = sum(len(b) for b in store.upserts)
    assert chunks == outcome.chunk_count and len(store.upserts) >= 2  # several batches

    spans = by_name(exporter.get_finished_spans())
    (root,) = spans["ingest.process"]
    assert root.parent is None
    assert root.attributes is not None
    assert root.attributes["perimeter.document.id"] == "doc-1"
    assert root.attributes["perimeter.tenant.id"] == "acme"
    assert root.attributes["perimeter.kb"] == "default"
    assert root.attributes["perimeter.ingest.status"] == "indexed"
    assert root.attributes["perimeter.ingest.chunk_count"] == chunks
    assert root.status.status_code is StatusCode.UNSET

    (parse,) = spans["ingest.parse"]
    (chunk,) = spans["ingest.chunk"]
    assert parse.attributes is not None and parse.attributes["perimeter.document.pages"] == 3
    assert chunk.attributes is not None
    assert chunk.attributes["perimeter.ingest.chunk_count"] == chunks
    embeds, upserts = spans["ingest.embed"], spans["ingest.upsert"]
    assert len(embeds) == len(upserts) == len(store.upserts)
    sizes = [len(b) for b in store.upserts]
    assert [s.attributes["perimeter.ingest.batch_size"] for s in embeds] == sizes  # type: ignore[index]
    assert [s.attributes["perimeter.ingest.batch_size"] for s in upserts] == sizes  # type: ignore[index]
    for child in [parse, chunk, *embeds, *upserts]:
        assert parent_id(child) == root.context.span_id
        assert child.context.trace_id == root.context.trace_id
    # In order: parse, chunk, then embed/upsert alternating.
    ordered = sorted(exporter.get_finished_spans(), key=lambda s: s.start_time or 0)
    assert [s.name for s in ordered[:4]] == [
        "ingest.process",
        "ingest.parse",
        "ingest.chunk",
        "ingest.embed",
    ]


def test_a_failed_ingestion_is_an_error_span(
    recorded: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = recorded
    outcome = ingestion(tracing, FakeParser(fail=True), FakeStore()).process("doc-1")
    assert outcome.status == "failed"
    spans = by_name(exporter.get_finished_spans())
    (root,) = spans["ingest.process"]
    assert root.attributes is not None and root.attributes["perimeter.ingest.status"] == "failed"
    assert root.status.status_code is StatusCode.ERROR
    assert "encrypted" in (root.status.description or "")
    (parse,) = spans["ingest.parse"]
    assert parse.status.status_code is StatusCode.ERROR
    assert [e.name for e in parse.events] == ["exception"]
    assert "ingest.embed" not in spans


# -- questions ------------------------------------------------------------------------------------


def answer_service(tracing: Tracing, llm: FakeLLM, reranker: bool = True) -> AnswerService:
    retriever = Retriever(
        FakeEmbedder(),
        FakeStore(),  # type: ignore[arg-type]
        None,
        reranker=FakeReranker() if reranker else None,
        rerank_candidates=6,
        tracer=tracing.tracer,
    )
    return AnswerService(
        retriever, llm, None, min_dense_score=0.2, max_tokens=64, tracer=tracing.tracer
    )


def test_query_span_tree(recorded: tuple[Tracing, InMemorySpanExporter]) -> None:
    tracing, exporter = recorded
    service = answer_service(tracing, FakeLLM())
    with tracing.tracer.start_as_current_span("POST /v1/query") as request_span:
        answer = service.answer("When is the boiler serviced?", SearchFilter("acme"), top_k=3)
    assert not answer.abstained

    spans = by_name(exporter.get_finished_spans())
    (search,) = spans["retrieval.search"]
    assert parent_id(search) == request_span.get_span_context().span_id
    assert search.attributes is not None
    assert search.attributes["perimeter.tenant.id"] == "acme"
    assert search.attributes["perimeter.retrieval.mode"] == "hybrid"
    assert search.attributes["perimeter.retrieval.top_k"] == 3
    assert search.attributes["perimeter.retrieval.results"] == 3
    for name in ("retrieval.embed_query", "retrieval.vector_search", "retrieval.rerank"):
        (child,) = spans[name]
        assert parent_id(child) == search.context.span_id, name
    (vector,) = spans["retrieval.vector_search"]
    assert vector.attributes is not None
    assert vector.attributes["perimeter.retrieval.limit"] == 6  # rerank candidates
    assert vector.attributes["db.system.name"] == "qdrant"

    (llm,) = spans["llm.complete"]
    assert parent_id(llm) == request_span.get_span_context().span_id
    assert llm.attributes is not None
    assert llm.attributes["gen_ai.operation.name"] == "chat"
    assert llm.attributes["gen_ai.request.model"] == "smollm2-135m-instruct"
    assert llm.attributes["gen_ai.response.model"] == "smollm2-135m-instruct-q8"
    assert llm.attributes["gen_ai.usage.input_tokens"] == 120
    assert llm.attributes["gen_ai.usage.output_tokens"] == 9
    assert llm.attributes["gen_ai.request.max_tokens"] == 64
    assert llm.attributes["perimeter.llm.sources"] == 3


def test_no_rerank_span_without_a_reranker_and_an_llm_error_is_recorded(
    recorded: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = recorded
    service = answer_service(tracing, FakeLLM(fail=True), reranker=False)
    with pytest.raises(ConnectionError):
        service.answer("When is the boiler serviced?", SearchFilter("acme"), top_k=2)
    spans = by_name(exporter.get_finished_spans())
    assert "retrieval.rerank" not in spans
    (llm,) = spans["llm.complete"]
    assert llm.status.status_code is StatusCode.ERROR
    assert [e.name for e in llm.events] == ["exception"]


def test_stream_span_belongs_to_the_request_even_when_consumed_in_another_thread(
    recorded: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = recorded
    service = answer_service(tracing, FakeLLM())
    with tracing.tracer.start_as_current_span("POST /v1/query") as request_span:
        _result, events = service.stream_answer("When?", SearchFilter("acme"), top_k=2)
    # Starlette iterates a sync stream in its thread pool, outside the request's context.
    consumed: list[tuple[str, Any]] = []
    worker = threading.Thread(target=lambda: consumed.extend(events))
    worker.start()
    worker.join(10)
    assert [kind for kind, _ in consumed] == ["token", "token", "answer"]

    (stream,) = by_name(exporter.get_finished_spans())["llm.stream"]
    assert parent_id(stream) == request_span.get_span_context().span_id
    assert stream.context.trace_id == request_span.get_span_context().trace_id
    assert stream.attributes is not None
    assert stream.attributes["gen_ai.usage.output_tokens"] == 2
    assert stream.attributes["gen_ai.request.model"] == "smollm2-135m-instruct"
    assert [e.name for e in stream.events] == ["gen_ai.first_token"]


def test_a_stream_that_fails_or_is_abandoned_still_ends_its_span(
    recorded: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = recorded
    _r, events = answer_service(tracing, FakeLLM(fail=True)).stream_answer(
        "When?", SearchFilter("acme"), top_k=2
    )
    with pytest.raises(ConnectionError):
        list(events)
    _r, abandoned = answer_service(tracing, FakeLLM()).stream_answer(
        "When?", SearchFilter("acme"), top_k=2
    )
    next(abandoned)
    abandoned.close()  # the client disconnected after the first token
    failed, cancelled = by_name(exporter.get_finished_spans())["llm.stream"]
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes is not None and failed.attributes["gen_ai.usage.output_tokens"] == 1
    assert cancelled.attributes is not None
    assert cancelled.attributes["perimeter.llm.cancelled"] is True


# -- sampling, propagation, export ---------------------------------------------------------------


def test_sampling_ratio_and_a_callers_sampled_flag() -> None:
    exporter = InMemorySpanExporter()
    tracing = build_tracer(
        TracingSettings(enabled=True, exporter="console", sample_ratio=0.0), exporter=exporter
    )
    try:
        with tracing.tracer.start_as_current_span("dropped"):
            headers = inject_trace_headers()
        # The decision travels with the trace: the worker does not record it either.
        assert int(headers["traceparent"].rsplit("-", 1)[1], 16) & 1 == 0
        with continue_trace(headers), tracing.tracer.start_as_current_span("dropped too"):
            pass
        with (
            continue_trace({"traceparent": TRACEPARENT}),
            tracing.tracer.start_as_current_span("kept"),
        ):
            pass
    finally:
        tracing.shutdown()
    assert [s.name for s in exporter.get_finished_spans()] == ["kept"]


def test_traceparent_round_trip_through_a_task_message(
    recorded: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = recorded
    with tracing.tracer.start_as_current_span("POST /v1/documents") as upload:
        headers = inject_trace_headers()
    ctx = upload.get_span_context()
    version, trace_id, span_id, flags = headers["traceparent"].split("-")
    assert (version, trace_id, span_id) == ("00", f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}")
    assert int(flags, 16) & 1 == 1  # sampled

    # Celery hands custom message headers to the task as request attributes (or in .headers).
    for request in (
        SimpleNamespace(headers=None, **headers),
        SimpleNamespace(headers=dict(headers)),
    ):
        carrier = trace_headers_of(request)
        assert carrier == headers
        with continue_trace(carrier), tracing.tracer.start_as_current_span("ingest.process"):
            pass
    # No headers (the recovery sweep enqueues outside any request): a trace of its own.
    no_headers = trace_headers_of(SimpleNamespace(headers=None))
    with continue_trace(no_headers), tracing.tracer.start_as_current_span("ingest.process"):
        pass
    continued_a, continued_b, own = by_name(exporter.get_finished_spans())["ingest.process"]
    for span in (continued_a, continued_b):
        assert span.context.trace_id == ctx.trace_id
        assert parent_id(span) == ctx.span_id
        assert span.parent is not None and span.parent.is_remote
    assert own.parent is None and own.context.trace_id != ctx.trace_id


def test_console_exporter_writes_one_json_object_per_span(
    capsys: pytest.CaptureFixture[str],
) -> None:
    tracing = build_tracer(TracingSettings(enabled=True, exporter="console", service_name="p1"))
    with tracing.tracer.start_as_current_span("retrieval.search", attributes={"a": 1}):
        pass
    tracing.shutdown()
    tracing.shutdown()  # idempotent
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert [line["name"] for line in lines] == ["retrieval.search"]
    assert lines[0]["attributes"] == {"a": 1}
    assert lines[0]["resource"]["attributes"]["service.name"] == "p1"
    # After shutdown the tracing is a no-op: nothing more is recorded.
    assert isinstance(tracing.tracer, NoOpTracer) and not tracing.enabled


def test_otlp_exporter_is_built_for_the_configured_collector_only() -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # Building connects to nothing; spans are sent in batches, off the request path.
    tracing = build_tracer(
        TracingSettings(enabled=True, endpoint="http://10.0.0.7:4318/v1/traces", timeout_s=3)
    )
    try:
        assert tracing.provider is not None
        (processor,) = tracing.provider._active_span_processor._span_processors
        assert isinstance(processor, BatchSpanProcessor)
        exporter = processor._batch_processor._exporter
        assert isinstance(exporter, OTLPSpanExporter)
        assert exporter._endpoint == "http://10.0.0.7:4318/v1/traces"
    finally:
        tracing.shutdown()


# -- the API middleware --------------------------------------------------------------------------


def _app(tracing: Tracing) -> Any:
    from fastapi import FastAPI, HTTPException

    app = FastAPI()

    @app.get("/v1/documents/{document_id}")
    def get_doc(document_id: str) -> dict[str, str]:
        if document_id == "missing":
            raise HTTPException(404)
        if document_id == "boom":
            raise RuntimeError("boom")
        return {"id": document_id}

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.add_middleware(TracingMiddleware, tracer=lambda: tracing.tracer)

    async def with_request_id(scope: Any, receive: Any, send: Any) -> None:
        token = request_id_var.set("rid-42")
        try:
            await app(scope, receive, send)
        finally:
            request_id_var.reset(token)

    return with_request_id


def test_middleware_makes_one_server_span_per_request(
    recorded: tuple[Tracing, InMemorySpanExporter],
) -> None:
    from fastapi.testclient import TestClient

    tracing, exporter = recorded
    client = TestClient(_app(tracing), raise_server_exceptions=False)
    assert client.get("/v1/documents/d1", headers={"traceparent": TRACEPARENT}).status_code == 200
    assert client.get("/v1/documents/missing").status_code == 404
    assert client.get("/v1/documents/boom").status_code == 500
    assert client.get("/healthz").status_code == 200  # probes are not traced

    ok, missing, boom = exporter.get_finished_spans()
    for span in (ok, missing, boom):
        assert span.name == "GET /v1/documents/{document_id}"
        assert span.kind is SpanKind.SERVER
        assert span.attributes is not None
        assert span.attributes["http.route"] == "/v1/documents/{document_id}"
        assert span.attributes["http.request.method"] == "GET"
        assert span.attributes["perimeter.request_id"] == "rid-42"
    assert ok.attributes is not None and ok.attributes["http.response.status_code"] == 200
    assert ok.attributes["url.path"] == "/v1/documents/d1"
    # It continues the caller's trace.
    assert f"{ok.context.trace_id:032x}" == REMOTE_TRACE_ID
    assert ok.parent is not None and f"{ok.parent.span_id:016x}" == REMOTE_SPAN_ID
    assert missing.parent is None
    # A 4xx is the caller's mistake; an exception is the server's.
    assert missing.attributes is not None
    assert missing.attributes["http.response.status_code"] == 404
    assert missing.status.status_code is StatusCode.UNSET
    assert boom.status.status_code is StatusCode.ERROR
    assert [e.name for e in boom.events] == ["exception"]


# -- perimeter doctor ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "status"),
    [
        ("http://10.20.0.5:4318/v1/traces", "ok"),
        ("http://127.0.0.1:4318/v1/traces", "ok"),
        ("https://104.18.6.192/v1/traces", "fail"),
        ("http://169.254.169.254:4318/v1/traces", "fail"),
    ],
)
def test_doctor_checks_the_collector_like_every_endpoint(endpoint: str, status: str) -> None:
    from perimeter import doctor

    settings = Settings(tracing={"enabled": True, "endpoint": endpoint})
    report = doctor.run(settings, env={}, resolver=None)
    (check,) = [c for c in report.checks if c.name == "tracing collector"]
    assert (check.area, check.status, check.value) == ("endpoint", status, endpoint)

    off = Settings(tracing={"enabled": False, "endpoint": endpoint})
    assert all(c.name != "tracing collector" for c in doctor.run(off, {}, None).checks)
