"""The real Perimeter retrieval stack as a :class:`~perimeter.eval.harness.SearchSystem`.

Everything a measured number depends on is the production code path: the services come from
:func:`perimeter.composition.build_services`, documents are chunked by
:func:`~perimeter.ingest.chunking.chunk_elements` with the configured budgets and the embedder's
own token counter, chunk records (dense + sparse vectors, payload) are made by
:meth:`IngestionService.records_for` — the method the ingest worker calls — and stored by the
Qdrant chunk store, and queries go through :class:`~perimeter.retrieval.search.Retriever` in the
requested mode.

What differs from an upload, and why it does not change the numbers:

* a corpus document arrives as text, not a file, so there is no parser: its title becomes a
  ``Title`` element and its text a ``NarrativeText`` element (what the parser yields for a plain
  text file with a heading);
* chunks of many documents are embedded in one call instead of one call per document, so a
  1,000-document corpus is indexed in seconds rather than minutes. The vectors are the embedder's,
  for the same texts (see :class:`_BatchedDocuments`);
* Qdrant runs in local mode on a throw-away folder, in a collection of its own.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from perimeter.backends.embedder_proxy import EmbedderProxy
from perimeter.domain import (
    Chunk,
    ChunkRecord,
    DocumentRecord,
    DocumentStatus,
    EncodedText,
    ParsedElement,
    SearchFilter,
    document_id_for,
)
from perimeter.eval.beir import CorpusDoc
from perimeter.ingest.chunking import TITLE_CATEGORY, chunk_elements
from perimeter.ingest.pipeline import embedding_text
from perimeter.retrieval.search import NO_CONTEXT, SearchContext

if TYPE_CHECKING:
    from perimeter.backends.protocols import Embedder
    from perimeter.composition import Services
    from perimeter.settings import Settings

EVAL_TENANT = "eval"
BODY_CATEGORY = "NarrativeText"
# Chunk records handed to the store per upsert call (the store batches further by itself).
UPSERT_RECORDS = 2048


class _BatchedDocuments(EmbedderProxy):
    """Embedder proxy whose document vectors can be computed ahead, many texts per call.

    ``IngestionService.records_for`` encodes the chunks of one document per call, which on a
    corpus of short documents means thousands of tiny model calls. :meth:`precompute` encodes
    every chunk text of the corpus in one call (the model batches and length-sorts internally);
    ``encode_documents`` then serves those vectors, and encodes anything it was not primed with.
    Queries, token counting and the rest go straight to the wrapped embedder.
    """

    def __init__(self, inner: Embedder) -> None:
        super().__init__(inner)
        self._ready: dict[str, EncodedText] = {}

    def encode_documents(self, texts: Sequence[str]) -> list[EncodedText]:
        missing = [t for t in dict.fromkeys(texts) if t not in self._ready]
        if missing:
            self.precompute(missing)
        return [self._ready[t] for t in texts]

    def precompute(self, texts: Sequence[str]) -> None:
        todo = [t for t in dict.fromkeys(texts) if t not in self._ready]
        if todo:
            self._ready.update(zip(todo, self._inner.encode_documents(todo), strict=True))

    def clear(self) -> None:
        self._ready.clear()


class PipelineSearchSystem:
    """Index a corpus into a private Perimeter stack and search it per retrieval mode.

    ``settings``: the configuration under test (chunking, BM25, fusion, prefetch, embedder);
    default ``Settings()``. Its storage, database, broker and Qdrant locations are replaced by a
    temporary folder (removed by :meth:`close`) and a fresh collection, so evaluating never touches
    a real deployment. ``embedder``: an already loaded embedder to share (else one is built from
    the settings, as the services would). ``chunk_factor``: chunks asked of the retriever per
    requested document, since several chunks of one document collapse into one hit.
    """

    name = "perimeter"

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        embedder: Embedder | None = None,
        chunk_factor: int = 3,
        workdir: Path | str | None = None,
    ) -> None:
        from perimeter.composition import build_embedder, build_services
        from perimeter.settings import Settings

        base = settings if settings is not None else Settings()
        self._tmp = Path(tempfile.mkdtemp(prefix="perimeter-eval-", dir=workdir))
        config = base.model_copy(deep=True)
        config.storage.data_dir = self._tmp / "data"
        config.database.url = None
        config.broker.url = None
        config.qdrant.url = None
        config.qdrant.api_key = None
        config.qdrant.collection = f"eval_{uuid.uuid4().hex[:12]}"
        self.settings = config
        self.chunk_factor = max(1, chunk_factor)
        self._embedder = _BatchedDocuments(embedder or build_embedder(config))
        self.services: Services = build_services(config, embedder=self._embedder)
        self._corpus_id: dict[str, str] = {}  # Perimeter document id -> corpus doc id
        self.chunk_count = 0
        self._closed = False

    # -- SearchSystem ------------------------------------------------------------------------
    def index(self, docs: Sequence[CorpusDoc]) -> None:
        services = self.services
        services.ensure_ready()
        chunking = self.settings.chunking
        planned: list[tuple[DocumentRecord, list[Chunk]]] = []
        for doc in docs:
            record = self._document_record(doc)
            chunks = chunk_elements(
                _elements(doc),
                self._embedder.count_tokens,
                chunking.max_tokens,
                chunking.overlap_tokens,
            )
            if not chunks:  # the ingest worker fails such a document: nothing searchable
                continue
            self._corpus_id[record.id] = doc.id
            planned.append((record, chunks))

        self._embedder.precompute([embedding_text(c) for _, chunks in planned for c in chunks])
        pending: list[ChunkRecord] = []
        for record, chunks in planned:
            pending.extend(services.ingestion.records_for(record, chunks))
            self.chunk_count += len(chunks)
            if len(pending) >= UPSERT_RECORDS:
                services.store.upsert(pending)
                pending = []
        if pending:
            services.store.upsert(pending)
        self._embedder.clear()

    def search(
        self, query: str, mode: str, k: int, context: SearchContext = NO_CONTEXT
    ) -> list[tuple[str, float]]:
        """``context``: a follow-up's earlier turns, searched beside it (Retriever.retrieve)."""
        result = self.services.retriever.retrieve(
            query,
            SearchFilter(tenant_id=EVAL_TENANT),
            top_k=max(1, k * self.chunk_factor),
            mode=mode,  # type: ignore[arg-type]
            context=context,
        )
        best: dict[str, float] = {}  # max-pool chunk scores per corpus document
        for chunk in result.chunks:
            corpus_id = self._corpus_id.get(chunk.document_id)
            if corpus_id is not None and chunk.score > best.get(corpus_id, float("-inf")):
                best[corpus_id] = chunk.score
        ranked = sorted(best.items(), key=lambda item: -item[1])  # stable: store order on ties
        return ranked[:k]

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.services.close()
        finally:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> PipelineSearchSystem:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- helpers -----------------------------------------------------------------------------
    @staticmethod
    def _document_record(doc: CorpusDoc) -> DocumentRecord:
        # The upload path keys a document on tenant + content hash; the corpus id is hashed in
        # too so two corpus entries with the same text stay two documents.
        payload = f"{doc.id}\n{doc.title}\n{doc.text}".encode()
        content_hash = hashlib.sha256(payload).hexdigest()
        now = datetime.now(UTC)
        return DocumentRecord(
            id=document_id_for(EVAL_TENANT, content_hash),
            tenant_id=EVAL_TENANT,
            content_hash=content_hash,
            filename=f"{doc.id}.txt",
            content_type="text/plain",
            size_bytes=len(payload),
            status=DocumentStatus.EMBEDDING,
            error=None,
            chunk_count=0,
            pages=None,
            metadata={"corpus_id": doc.id},
            attempts=1,
            created_at=now,
            updated_at=now,
        )


def _elements(doc: CorpusDoc) -> list[ParsedElement]:
    elements = []
    if doc.title.strip():
        elements.append(ParsedElement(text=doc.title, category=TITLE_CATEGORY))
    if doc.text.strip():
        elements.append(ParsedElement(text=doc.text, category=BODY_CATEGORY))
    return elements
