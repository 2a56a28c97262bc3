"""Ingestion: accept an upload durably (API side), then parse → chunk → embed → upsert (worker).

Every step is idempotent and keyed on the document id (a function of tenant + content hash) and
the chunk index, so a task that runs twice — redelivered after a crash, or re-enqueued by the
recovery sweep — overwrites the same points and never duplicates them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from opentelemetry.trace import NoOpTracer, StatusCode, Tracer, get_current_span

from perimeter.backends.protocols import (
    BlobStorage,
    ChunkStore,
    DocumentParser,
    Embedder,
    MetadataStore,
    SparseEncoder,
)
from perimeter.domain import (
    DEFAULT_KB,
    Chunk,
    ChunkRecord,
    DocumentRecord,
    DocumentStatus,
    JobRecord,
    ParsedDocument,
    document_id_for,
    point_id_for,
)
from perimeter.ingest.chunking import chunk_elements
from perimeter.ingest.errors import InvalidDocument, ParseError, UnsupportedFileType
from perimeter.ingest.validation import safe_filename, validate_upload

log = logging.getLogger(__name__)


class IngestObserver(Protocol):
    """Where ingestion reports what it did (Prometheus metrics: perimeter.observability)."""

    def embedded_batch(self, size: int) -> None: ...

    def indexed(self, chunks: int) -> None: ...


class IngestMirror(Protocol):
    """Told of every document indexed into, or removed from, the serving collection."""

    def indexed(self, doc: DocumentRecord, collection: str) -> None:
        """``doc`` was indexed into ``collection``."""
        ...

    def deleted(self, doc: DocumentRecord, collection: str) -> None:
        """``doc``'s chunks were removed from ``collection``."""
        ...


class PermanentIngestError(Exception):
    """Retrying will not help (bad file, no text): the document is marked failed at once."""


@dataclass(frozen=True, slots=True)
class IndexTarget:
    """Where and how one document is indexed: its knowledge base's embedding profile (model,
    sparse encoder, Qdrant collection) and chunking."""

    embedder: Embedder
    sparse_encoder: SparseEncoder | None
    store: ChunkStore
    max_tokens: int
    overlap_tokens: int


@dataclass(frozen=True, slots=True)
class StagedUpload:
    tmp_path: Path
    filename: str
    content_type: str
    content_hash: str
    size_bytes: int


@dataclass(frozen=True, slots=True)
class Submitted:
    document: DocumentRecord
    job: JobRecord
    created: bool


@dataclass(frozen=True, slots=True)
class ProcessOutcome:
    document_id: str
    status: str  # "indexed", "failed", "skipped", "gone"
    chunk_count: int = 0
    detail: str | None = None
    seconds: float = 0.0


class IngestionService:
    def __init__(
        self,
        metadata: MetadataStore,
        blobs: BlobStorage,
        parser: DocumentParser,
        embedder: Embedder,
        sparse_encoder: SparseEncoder | None,
        store: ChunkStore,
        max_tokens: int,
        overlap_tokens: int,
        embed_batch_size: int = 32,
        max_attempts: int = 3,
        targets: Callable[[DocumentRecord], IndexTarget] | None = None,
        tracer: Tracer = NoOpTracer(),
        max_document_chars: int | None = None,
        max_chunks: int | None = None,
    ) -> None:
        """``embedder``/``sparse_encoder``/``store``/chunking are the default knowledge base's;
        ``targets`` resolves a document of any knowledge base (composition wires it to the
        knowledge bases and their embedding profiles). It raises LookupError when the document's
        knowledge base is gone."""
        self._metadata = metadata
        self._blobs = blobs
        self._parser = parser
        self._embed_batch_size = embed_batch_size
        self._max_attempts = max_attempts
        # Per-document bounds on the work a parse may cause (a decompression bomb that slips past
        # validation, a huge generated sheet): past them the document fails, nothing indexed.
        self._max_document_chars = max_document_chars
        self._max_chunks = max_chunks
        self._default_target = IndexTarget(
            embedder, sparse_encoder, store, max_tokens, overlap_tokens
        )
        self._targets = targets
        self._tracer = tracer  # perimeter.tracing: ingest.* spans
        # Set by the API app that exports metrics (perimeter.observability.Metrics.bind).
        self.observer: IngestObserver | None = None
        # Set by the composition root: a zero-downtime re-index (perimeter.ingest.reindex)
        # that must see every document indexed or removed while it runs.
        self.mirror: IngestMirror | None = None

    # -- API side: accept durably ----------------------------------------------------------
    def stage(
        self, source: BinaryIO, filename: str, declared_type: str | None, max_bytes: int
    ) -> StagedUpload:
        """Write the upload to the store's temp area and validate it by content.

        Raises InvalidDocument / UnsupportedFileType / FileTooLarge; nothing stays behind then.
        """
        name = safe_filename(filename)
        tmp, content_hash, size = self._blobs.stage(source, max_bytes)
        try:
            content_type = validate_upload(tmp, name, declared_type)
        except BaseException:
            self._blobs.discard(tmp)
            raise
        return StagedUpload(tmp, name, content_type, content_hash, size)

    def discard(self, staged: Sequence[StagedUpload]) -> None:
        for s in staged:
            self._blobs.discard(s.tmp_path)

    def submit(
        self,
        staged: StagedUpload,
        tenant_id: str,
        metadata: dict[str, Any],
        groups: list[str] | None = None,
        kb: str = DEFAULT_KB,
    ) -> Submitted:
        """Commit the file, then the metadata row + job, in that order: a row never points at a
        missing file. The caller enqueues the task only after this returns."""
        self._blobs.commit(staged.tmp_path, staged.content_hash)
        doc, job, created = self._metadata.create_document_with_job(
            document_id=document_id_for(tenant_id, staged.content_hash, kb),
            tenant_id=tenant_id,
            content_hash=staged.content_hash,
            filename=staged.filename,
            content_type=staged.content_type,
            size_bytes=staged.size_bytes,
            metadata=metadata,
            groups=groups or [],
            kb=kb,
        )
        if not created and doc.status is DocumentStatus.FAILED:
            # The same bytes again after a failure: try once more, it may have been transient.
            job = self._metadata.new_job(tenant_id, doc.id)
            doc = self._metadata.get_document(tenant_id, doc.id) or doc
            return Submitted(doc, job, True)
        return Submitted(doc, job, created)

    def delete(self, tenant_id: str, document_id: str) -> bool:
        doc = self._metadata.get_document(tenant_id, document_id)
        if doc is None:
            return False
        # Chunks first: if we crash after, a retry of the delete finds the row and finishes.
        store = self._store_of(doc)
        store.delete_document(tenant_id, document_id)
        if self.mirror is not None:
            self.mirror.deleted(doc, store.collection)
        self._metadata.delete_document(tenant_id, document_id)
        if not self._metadata.hash_in_use(doc.content_hash):
            self._blobs.delete(doc.content_hash)
        return True

    def delete_documents_of_kb(self, tenant_id: str, kb: str) -> int:
        """Delete every document of a knowledge base (chunks, rows, unshared files)."""
        ids = self._metadata.document_ids_in_kb(tenant_id, kb)
        return sum(self.delete(tenant_id, doc_id) for doc_id in ids)

    def target(self, doc: DocumentRecord) -> IndexTarget:
        # The default knowledge base goes through `targets` too: a re-index switch may have
        # moved its profile to another collection and model.
        if self._targets is None:
            return self._default_target
        return self._targets(doc)

    def _store_of(self, doc: DocumentRecord) -> ChunkStore:
        try:
            return self.target(doc).store
        except LookupError:
            # The knowledge base went first; its chunks were deleted with it.
            return self._default_target.store

    def stale(self, older_than: timedelta) -> list[DocumentRecord]:
        return self._metadata.stale_documents(older_than)

    # -- worker side: process --------------------------------------------------------------
    def process(
        self, document_id: str, on_progress: Callable[[float], None] | None = None
    ) -> ProcessOutcome:
        with self._tracer.start_as_current_span(
            "ingest.process", attributes={"perimeter.document.id": document_id}
        ) as span:
            outcome = self._process(document_id, on_progress)
            span.set_attribute("perimeter.ingest.status", outcome.status)
            span.set_attribute("perimeter.ingest.chunk_count", outcome.chunk_count)
            if outcome.status == "failed":
                span.set_status(StatusCode.ERROR, outcome.detail)
            return outcome

    def _process(
        self, document_id: str, on_progress: Callable[[float], None] | None
    ) -> ProcessOutcome:
        started = time.perf_counter()
        doc = self._metadata.get_document_any_tenant(document_id)
        if doc is None:
            return ProcessOutcome(document_id, "gone", detail="document was deleted")
        get_current_span().set_attributes(
            {
                "perimeter.tenant.id": doc.tenant_id,
                "perimeter.kb": doc.kb,
                "perimeter.document.content_type": doc.content_type,
            }
        )
        try:
            target = self.target(doc)
        except LookupError as exc:
            reason = f"knowledge base {doc.kb!r} no longer exists ({exc})"
            self._metadata.set_status(doc.id, DocumentStatus.FAILED, error=reason)
            return ProcessOutcome(document_id, "failed", detail=reason)
        if (
            doc.status is DocumentStatus.INDEXED
            and target.store.count_document(doc.tenant_id, doc.id) == doc.chunk_count
        ):
            return ProcessOutcome(document_id, "skipped", doc.chunk_count, "already indexed")

        attempts = self._metadata.record_attempt(doc.id)
        if attempts > self._max_attempts:
            reason = (
                f"gave up after {attempts - 1} attempts: the worker processing this file died "
                "each time (it may be malformed or too large to parse)"
            )
            self._fail(doc, reason, target)
            return ProcessOutcome(document_id, "failed", detail=reason)

        try:
            self._metadata.set_status(doc.id, DocumentStatus.PARSING, progress=0.05)
            chunks, parsed = self._parse_and_chunk(doc, target)
            pages = parsed.pages
            self._metadata.set_status(
                doc.id,
                DocumentStatus.EMBEDDING,
                pages=pages,
                progress=0.2,
                ocr_pages=parsed.ocr_pages,
                ocr_confidence=parsed.ocr_confidence,
            )
            self._embed_and_upsert(doc, chunks, target, on_progress)
            target.store.delete_document_tail(doc.tenant_id, doc.id, keep=len(chunks))
        except PermanentIngestError as exc:
            self._fail(doc, str(exc), target)
            return ProcessOutcome(document_id, "failed", detail=str(exc))

        if not self._metadata.set_status(
            doc.id, DocumentStatus.INDEXED, chunk_count=len(chunks), pages=pages
        ):
            # Deleted while we worked: take our chunks back out.
            target.store.delete_document(doc.tenant_id, doc.id)
            return ProcessOutcome(document_id, "gone", detail="deleted during ingestion")
        if self.observer is not None:
            self.observer.indexed(len(chunks))
        if self.mirror is not None:
            self.mirror.indexed(doc, target.store.collection)
        return ProcessOutcome(
            document_id, "indexed", len(chunks), seconds=time.perf_counter() - started
        )

    def mark_failed(self, document_id: str, reason: str) -> None:
        doc = self._metadata.get_document_any_tenant(document_id)
        if doc is not None:
            self._fail(doc, reason, None)

    def _fail(self, doc: DocumentRecord, reason: str, target: IndexTarget | None) -> None:
        # Nothing half-ingested: a failed document has no searchable chunks.
        try:
            store = target.store if target is not None else self._store_of(doc)
            store.delete_document(doc.tenant_id, doc.id)
            if self.mirror is not None:
                self.mirror.deleted(doc, store.collection)
        finally:
            self._metadata.set_status(doc.id, DocumentStatus.FAILED, error=reason)

    def index_into(self, doc: DocumentRecord, target: IndexTarget) -> int:
        """Parse, chunk, embed and write one document into ``target`` from its stored file,
        leaving its status and job alone: the re-index's copy into a new collection. Returns
        the chunk count. Raises PermanentIngestError when the file cannot be indexed."""
        chunks, _parsed = self._parse_and_chunk(doc, target, report_pages=False)
        step = max(1, self._embed_batch_size * 4)
        for start in range(0, len(chunks), step):
            target.store.upsert(self.records_for(doc, chunks[start : start + step], target))
        target.store.delete_document_tail(doc.tenant_id, doc.id, keep=len(chunks))
        return len(chunks)

    def _parse_and_chunk(
        self, doc: DocumentRecord, target: IndexTarget, report_pages: bool = True
    ) -> tuple[list[Chunk], ParsedDocument]:
        """The document's chunks, and what the parser said of it (its elements left out: the
        chunks hold their text, and a long scan's elements need not live through embedding)."""
        path = self._blobs.path_for(doc.content_hash)
        if not path.exists():
            raise PermanentIngestError("the stored file is missing (was the data folder changed?)")
        try:
            with self._tracer.start_as_current_span("ingest.parse") as span:
                parsed = self._parser.parse(
                    path,
                    doc.content_type,
                    doc.filename,
                    on_page=self._page_progress(doc.id) if report_pages else None,
                )
                span.set_attribute("perimeter.ingest.elements", len(parsed.elements))
                if parsed.pages is not None:
                    span.set_attribute("perimeter.document.pages", parsed.pages)
                if parsed.ocr_pages:
                    span.set_attribute("perimeter.ingest.ocr_pages", len(parsed.ocr_pages))
                    if parsed.ocr_confidence is not None:
                        span.set_attribute("perimeter.ingest.ocr_confidence", parsed.ocr_confidence)
                    log.info(
                        "OCR read %d page(s) of %s, mean confidence %s",
                        len(parsed.ocr_pages),
                        doc.id,
                        parsed.ocr_confidence,
                    )
        except (ParseError, InvalidDocument, UnsupportedFileType) as exc:
            raise PermanentIngestError(str(exc)) from exc
        if self._max_document_chars is not None:
            chars = sum(len(e.text) for e in parsed.elements)
            if chars > self._max_document_chars:
                raise PermanentIngestError(
                    f"the document's text is {chars} characters, over the limit of "
                    f"{self._max_document_chars} (chunking.max_document_chars); split it"
                )
        with self._tracer.start_as_current_span("ingest.chunk") as span:
            chunks = chunk_elements(
                parsed.elements,
                target.embedder.count_tokens,
                target.max_tokens,
                target.overlap_tokens,
            )
            span.set_attribute("perimeter.ingest.chunk_count", len(chunks))
        if not chunks:
            raise PermanentIngestError("no extractable text in this file")
        if self._max_chunks is not None and len(chunks) > self._max_chunks:
            raise PermanentIngestError(
                f"the document makes {len(chunks)} chunks, over the limit of {self._max_chunks} "
                "(chunking.max_chunks_per_document); split it"
            )
        return chunks, replace(parsed, elements=[])

    def _page_progress(self, document_id: str) -> Callable[[int, int], None]:
        """Job progress while slow pages (OCR) are read: parsing spans 0.05 to 0.2 of the job,
        so a 300-page scan shows it moving page by page instead of sitting at 0.05."""

        def report(done: int, total: int) -> None:
            self._metadata.set_job_progress(document_id, 0.05 + 0.15 * done / max(total, 1))

        return report

    def _embed_and_upsert(
        self,
        doc: DocumentRecord,
        chunks: list[Chunk],
        target: IndexTarget,
        on_progress: Callable[[float], None] | None,
    ) -> None:
        step = max(1, self._embed_batch_size * 4)
        for start in range(0, len(chunks), step):
            batch = chunks[start : start + step]
            records = self.records_for(doc, batch, target)
            with self._tracer.start_as_current_span(
                "ingest.upsert", attributes={"perimeter.ingest.batch_size": len(records)}
            ):
                target.store.upsert(records)
            done = min(len(chunks), start + step) / len(chunks)
            progress = 0.2 + 0.8 * done
            self._metadata.set_job_progress(doc.id, progress)
            if on_progress is not None:
                on_progress(progress)

    def records_for(
        self, doc: DocumentRecord, chunks: Sequence[Chunk], target: IndexTarget | None = None
    ) -> list[ChunkRecord]:
        target = target or self.target(doc)
        texts = [embedding_text(c) for c in chunks]
        with self._tracer.start_as_current_span(
            "ingest.embed", attributes={"perimeter.ingest.batch_size": len(texts)}
        ):
            encoded = target.embedder.encode_documents(texts)
            if self.observer is not None:
                self.observer.embedded_batch(len(texts))
            sparse_encoder = target.sparse_encoder
            lexical = sparse_encoder.encode_documents(texts) if sparse_encoder is not None else None
        records = []
        for i, (chunk, enc) in enumerate(zip(chunks, encoded, strict=True)):
            sparse = enc.sparse if enc.sparse is not None else (lexical[i] if lexical else None)
            records.append(
                ChunkRecord(
                    point_id=point_id_for(doc.id, chunk.index),
                    tenant_id=doc.tenant_id,
                    document_id=doc.id,
                    chunk_index=chunk.index,
                    text=chunk.text,
                    filename=doc.filename,
                    page=chunk.page,
                    section=chunk.section,
                    dense=enc.dense,
                    sparse=sparse,
                    metadata=doc.metadata,
                    groups=doc.groups,
                    kb=doc.kb,
                    ocr_confidence=chunk.ocr_confidence,
                )
            )
        return records


def embedding_text(chunk: Chunk) -> str:
    """What the embedder sees: the chunk, led by its section title when the chunk does not
    already start with it — a passage deep in a section still carries the section's topic."""
    if chunk.section and not chunk.text.startswith(chunk.section):
        return f"{chunk.section}\n{chunk.text}"
    return chunk.text
