"""Ingestion: accept an upload durably (API side), then parse → chunk → embed → upsert (worker).

Every step is idempotent and keyed on the document id (a function of tenant + content hash) and
the chunk index, so a task that runs twice — redelivered after a crash, or re-enqueued by the
recovery sweep — overwrites the same points and never duplicates them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from perimeter.backends.blob_store import BlobStore
from perimeter.backends.protocols import ChunkStore, DocumentParser, Embedder, SparseEncoder
from perimeter.backends.sql_metadata import SqlMetadataStore
from perimeter.domain import (
    Chunk,
    ChunkRecord,
    DocumentRecord,
    DocumentStatus,
    JobRecord,
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


class PermanentIngestError(Exception):
    """Retrying will not help (bad file, no text): the document is marked failed at once."""


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
        metadata: SqlMetadataStore,
        blobs: BlobStore,
        parser: DocumentParser,
        embedder: Embedder,
        sparse_encoder: SparseEncoder | None,
        store: ChunkStore,
        max_tokens: int,
        overlap_tokens: int,
        embed_batch_size: int = 32,
        max_attempts: int = 3,
    ) -> None:
        self._metadata = metadata
        self._blobs = blobs
        self._parser = parser
        self._embedder = embedder
        self._sparse = sparse_encoder
        self._store = store
        self._max_tokens = max_tokens
        self._overlap_tokens = overlap_tokens
        self._embed_batch_size = embed_batch_size
        self._max_attempts = max_attempts
        # Set by the API app that exports metrics (perimeter.observability.Metrics.bind).
        self.observer: IngestObserver | None = None

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
    ) -> Submitted:
        """Commit the file, then the metadata row + job, in that order: a row never points at a
        missing file. The caller enqueues the task only after this returns."""
        self._blobs.commit(staged.tmp_path, staged.content_hash)
        doc, job, created = self._metadata.create_document_with_job(
            document_id=document_id_for(tenant_id, staged.content_hash),
            tenant_id=tenant_id,
            content_hash=staged.content_hash,
            filename=staged.filename,
            content_type=staged.content_type,
            size_bytes=staged.size_bytes,
            metadata=metadata,
            groups=groups or [],
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
        self._store.delete_document(tenant_id, document_id)
        self._metadata.delete_document(tenant_id, document_id)
        if not self._metadata.hash_in_use(doc.content_hash):
            self._blobs.delete(doc.content_hash)
        return True

    def stale(self, older_than: timedelta) -> list[DocumentRecord]:
        return self._metadata.stale_documents(older_than)

    # -- worker side: process --------------------------------------------------------------
    def process(
        self, document_id: str, on_progress: Callable[[float], None] | None = None
    ) -> ProcessOutcome:
        started = time.perf_counter()
        doc = self._metadata.get_document_any_tenant(document_id)
        if doc is None:
            return ProcessOutcome(document_id, "gone", detail="document was deleted")
        if (
            doc.status is DocumentStatus.INDEXED
            and self._store.count_document(doc.tenant_id, doc.id) == doc.chunk_count
        ):
            return ProcessOutcome(document_id, "skipped", doc.chunk_count, "already indexed")

        attempts = self._metadata.record_attempt(doc.id)
        if attempts > self._max_attempts:
            reason = (
                f"gave up after {attempts - 1} attempts: the worker processing this file died "
                "each time (it may be malformed or too large to parse)"
            )
            self._fail(doc, reason)
            return ProcessOutcome(document_id, "failed", detail=reason)

        try:
            self._metadata.set_status(doc.id, DocumentStatus.PARSING, progress=0.05)
            chunks, pages = self._parse_and_chunk(doc)
            self._metadata.set_status(doc.id, DocumentStatus.EMBEDDING, pages=pages, progress=0.2)
            self._embed_and_upsert(doc, chunks, on_progress)
            self._store.delete_document_tail(doc.tenant_id, doc.id, keep=len(chunks))
        except PermanentIngestError as exc:
            self._fail(doc, str(exc))
            return ProcessOutcome(document_id, "failed", detail=str(exc))

        if not self._metadata.set_status(
            doc.id, DocumentStatus.INDEXED, chunk_count=len(chunks), pages=pages
        ):
            # Deleted while we worked: take our chunks back out.
            self._store.delete_document(doc.tenant_id, doc.id)
            return ProcessOutcome(document_id, "gone", detail="deleted during ingestion")
        if self.observer is not None:
            self.observer.indexed(len(chunks))
        return ProcessOutcome(
            document_id, "indexed", len(chunks), seconds=time.perf_counter() - started
        )

    def mark_failed(self, document_id: str, reason: str) -> None:
        doc = self._metadata.get_document_any_tenant(document_id)
        if doc is not None:
            self._fail(doc, reason)

    def _fail(self, doc: DocumentRecord, reason: str) -> None:
        # Nothing half-ingested: a failed document has no searchable chunks.
        try:
            self._store.delete_document(doc.tenant_id, doc.id)
        finally:
            self._metadata.set_status(doc.id, DocumentStatus.FAILED, error=reason)

    def _parse_and_chunk(self, doc: DocumentRecord) -> tuple[list[Chunk], int | None]:
        path = self._blobs.path_for(doc.content_hash)
        if not path.exists():
            raise PermanentIngestError("the stored file is missing (was the data folder changed?)")
        try:
            parsed = self._parser.parse(path, doc.content_type, doc.filename)
        except (ParseError, InvalidDocument, UnsupportedFileType) as exc:
            raise PermanentIngestError(str(exc)) from exc
        chunks = chunk_elements(
            parsed.elements,
            self._embedder.count_tokens,
            self._max_tokens,
            self._overlap_tokens,
        )
        if not chunks:
            raise PermanentIngestError("no extractable text in this file")
        return chunks, parsed.pages

    def _embed_and_upsert(
        self,
        doc: DocumentRecord,
        chunks: list[Chunk],
        on_progress: Callable[[float], None] | None,
    ) -> None:
        step = max(1, self._embed_batch_size * 4)
        for start in range(0, len(chunks), step):
            batch = chunks[start : start + step]
            self._store.upsert(self.records_for(doc, batch))
            done = min(len(chunks), start + step) / len(chunks)
            progress = 0.2 + 0.8 * done
            self._metadata.set_job_progress(doc.id, progress)
            if on_progress is not None:
                on_progress(progress)

    def records_for(self, doc: DocumentRecord, chunks: Sequence[Chunk]) -> list[ChunkRecord]:
        texts = [embedding_text(c) for c in chunks]
        encoded = self._embedder.encode_documents(texts)
        if self.observer is not None:
            self.observer.embedded_batch(len(texts))
        lexical = self._sparse.encode_documents(texts) if self._sparse is not None else None
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
                )
            )
        return records


def embedding_text(chunk: Chunk) -> str:
    """What the embedder sees: the chunk, led by its section title when the chunk does not
    already start with it — a passage deep in a section still carries the section's topic."""
    if chunk.section and not chunk.text.startswith(chunk.section):
        return f"{chunk.section}\n{chunk.text}"
    return chunk.text
