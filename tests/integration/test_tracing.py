"""Tracing, end to end, into an OpenTelemetry "collector" inside the perimeter.

The collector is a tiny HTTP server on 127.0.0.1 that accepts OTLP/HTTP (``POST /v1/traces``,
protobuf) and decodes what it gets with OpenTelemetry's own protobuf messages. The stack is the
real one of the other integration tests (API + Celery worker on Redis + local Qdrant + MiniLM +
unstructured) with ``PERIMETER_TRACING__*`` set; an upload is ingested by the worker, then
questions are asked. The spans must arrive with their names, attributes and parentage, and the
worker's ``ingest.process`` must sit in the trace of the upload request that enqueued it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tests import docfactory as df
from tests.conftest import Stack, free_port, running_stack, upload_files

pytestmark = pytest.mark.integration

CALLER_TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN_ID = "b7ad6b7169203331"
COLLECTOR_TOKEN = "Bearer in-perimeter-collector-token"


@dataclass
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    status_code: int
    attributes: dict[str, Any]
    resource: dict[str, Any]


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


@dataclass
class Collector:
    """An OTLP/HTTP trace receiver: what an OpenTelemetry Collector does with a request."""

    server: ThreadingHTTPServer
    spans: list[ReceivedSpan] = field(default_factory=list)
    requests: list[tuple[str, str, str]] = field(default_factory=list)  # path, type, auth
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def endpoint(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/v1/traces"

    def receive(self, path: str, content_type: str, auth: str, body: bytes) -> None:
        message = ExportTraceServiceRequest()
        message.ParseFromString(body)
        received = []
        for rs in message.resource_spans:
            resource = {a.key: _value(a.value) for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    received.append(
                        ReceivedSpan(
                            name=s.name,
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_span_id=s.parent_span_id.hex(),
                            kind=s.kind,
                            status_code=s.status.code,
                            attributes={a.key: _value(a.value) for a in s.attributes},
                            resource=resource,
                        )
                    )
        with self.lock:
            self.requests.append((path, content_type, auth))
            self.spans.extend(received)

    def named(self, name: str) -> list[ReceivedSpan]:
        with self.lock:
            return [s for s in self.spans if s.name == name]


@pytest.fixture
def collector() -> Iterator[Collector]:
    holder: list[Collector] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path != "/v1/traces":
                self.send_response(404)
                self.end_headers()
                return
            holder[0].receive(
                self.path,
                self.headers.get("Content-Type", ""),
                self.headers.get("Authorization", ""),
                body,
            )
            reply = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder.append(Collector(server))
    thread = threading.Thread(target=server.serve_forever, name="otlp-collector", daemon=True)
    thread.start()
    try:
        yield holder[0]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def traced_stack(
    tmp_path: Path,
    shared_embedder: Any,
    request: pytest.FixtureRequest,
    collector: Collector,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Stack]:
    # A proxy in the environment (a dead one here) must not divert the spans: the exporter
    # ignores HTTP(S)_PROXY and goes straight to the configured collector.
    dead_proxy = f"http://127.0.0.1:{free_port()}"
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(var, dead_proxy)
    monkeypatch.setenv("NO_PROXY", "testserver")  # the TestClient's own host
    overrides = {
        "tracing": {
            "enabled": True,
            "endpoint": collector.endpoint,
            "headers": f"authorization={COLLECTOR_TOKEN}",
        }
    }
    with running_stack(Stack, tmp_path, shared_embedder, request, overrides) as s:
        yield s


def wait_for(collector: Collector, stack: Stack, *names: str, timeout_s: float = 20.0) -> None:
    """Flush the exporter until every named span has reached the collector."""
    deadline = time.monotonic() + timeout_s
    while True:
        stack.services.tracing.force_flush()
        missing = [n for n in names if not collector.named(n)]
        if not missing:
            return
        if time.monotonic() > deadline:
            got = sorted({s.name for s in collector.spans})
            pytest.fail(f"spans {missing} never reached the collector; it got {got}")
        time.sleep(0.2)


def test_upload_ingest_and_query_spans_reach_the_in_perimeter_collector(
    traced_stack: Stack, collector: Collector, tmp_path: Path
) -> None:
    stack = traced_stack
    path = df.make_txt(
        tmp_path / "boilers.txt",
        ["The boiler in building C is serviced every March by the facilities team."],
    )
    upload = upload_files(stack.client, path)
    assert upload.status_code == 202, upload.text
    upload_request_id = upload.headers["X-Request-ID"]
    doc_id = upload.json()["documents"][0]["document_id"]
    assert stack.wait_indexed([doc_id], timeout_s=60)[doc_id]["status"] == "indexed"

    # A caller that traces too: the question continues its trace.
    caller = {"traceparent": f"00-{CALLER_TRACE_ID}-{CALLER_SPAN_ID}-01"}
    found = stack.client.post(
        "/v1/query",
        json={"question": "When is the boiler serviced?", "retrieval_only": True},
        headers=caller,
    )
    assert found.status_code == 200 and found.json()["sources"], found.text
    # The LLM of this stack is a closed port: the call fails fast, and its span says so.
    failed = stack.client.post("/v1/query", json={"question": "When is the boiler serviced?"})
    assert failed.status_code == 503, failed.text

    wait_for(
        collector,
        stack,
        "POST /v1/documents",
        "ingest.process",
        "ingest.upsert",
        "POST /v1/query",
        "llm.complete",
    )
    assert set(collector.requests) == {("/v1/traces", "application/x-protobuf", COLLECTOR_TOKEN)}

    # -- the upload request, and the worker's ingestion in the same trace --------------------
    (upload_span,) = collector.named("POST /v1/documents")
    assert upload_span.kind == 2  # SPAN_KIND_SERVER
    assert upload_span.attributes["http.route"] == "/v1/documents"
    assert upload_span.attributes["http.response.status_code"] == 202
    assert upload_span.attributes["perimeter.request_id"] == upload_request_id
    assert upload_span.resource["service.name"] == "perimeter"

    (process,) = collector.named("ingest.process")
    assert process.trace_id == upload_span.trace_id
    assert process.parent_span_id == upload_span.span_id
    assert process.attributes["perimeter.document.id"] == doc_id
    assert process.attributes["perimeter.tenant.id"] == "default"
    assert process.attributes["perimeter.ingest.status"] == "indexed"
    chunks = process.attributes["perimeter.ingest.chunk_count"]
    assert chunks >= 1
    for name in ("ingest.parse", "ingest.chunk", "ingest.embed", "ingest.upsert"):
        spans = collector.named(name)
        assert spans, name
        for span in spans:
            assert span.parent_span_id == process.span_id, name
            assert span.trace_id == upload_span.trace_id, name
    embedded = sum(
        s.attributes["perimeter.ingest.batch_size"] for s in collector.named("ingest.embed")
    )
    assert embedded == chunks

    # -- the questions ----------------------------------------------------------------------
    queries = collector.named("POST /v1/query")
    (traced_query,) = [q for q in queries if q.trace_id == CALLER_TRACE_ID]
    assert traced_query.parent_span_id == CALLER_SPAN_ID
    assert traced_query.attributes["http.response.status_code"] == 200
    (llm_query,) = [q for q in queries if q is not traced_query]
    assert llm_query.attributes["http.response.status_code"] == 503

    searches = {s.trace_id: s for s in collector.named("retrieval.search")}
    search = searches[CALLER_TRACE_ID]
    assert search.parent_span_id == traced_query.span_id
    assert search.attributes["perimeter.retrieval.mode"] == "hybrid"
    assert search.attributes["perimeter.retrieval.results"] >= 1
    for name in ("retrieval.embed_query", "retrieval.vector_search"):
        (child,) = [s for s in collector.named(name) if s.trace_id == CALLER_TRACE_ID]
        assert child.parent_span_id == search.span_id, name
    assert not collector.named("retrieval.rerank")  # no reranker configured

    (llm,) = collector.named("llm.complete")
    assert llm.trace_id == llm_query.trace_id and llm.parent_span_id == llm_query.span_id
    assert llm.status_code == 2  # STATUS_CODE_ERROR: the LLM was unreachable
    assert llm.attributes["gen_ai.operation.name"] == "chat"
    assert llm.attributes["gen_ai.request.model"] == stack.settings.llm.model
