"""One Protocol per swappable backend. Implementations live beside this file.

Constructors are cheap: nothing loads a model or opens a connection until first use or an
explicit ``warm_up()``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, runtime_checkable

from perimeter.domain import (
    ChatMessage,
    ChunkRecord,
    Completion,
    ContextQuery,
    ConversationRecord,
    ConversationTurnRecord,
    DocumentRecord,
    DocumentStatus,
    EncodedText,
    JobRecord,
    KnowledgeBase,
    OcrPage,
    ParsedDocument,
    ScoredChunk,
    SearchFilter,
    SparseVector,
)

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage


@runtime_checkable
class Embedder(Protocol):
    """Dense (and, for BGE-M3, learned sparse) vectors for text."""

    @property
    def dimension(self) -> int: ...

    @property
    def has_sparse(self) -> bool:
        """True when the model yields its own sparse lexical weights (BGE-M3)."""
        ...

    def warm_up(self) -> None: ...

    def count_tokens(self, text: str) -> int: ...

    def encode_documents(self, texts: Sequence[str]) -> list[EncodedText]: ...

    def encode_queries(self, texts: Sequence[str]) -> list[EncodedText]: ...


class SparseEncoder(Protocol):
    """Lexical sparse vectors (BM25-style) for models without a sparse head."""

    @property
    def uses_idf_modifier(self) -> bool:
        """True when the store should apply IDF at query time (Qdrant's IDF modifier)."""
        ...

    def encode_documents(self, texts: Sequence[str]) -> list[SparseVector]: ...

    def encode_queries(self, texts: Sequence[str]) -> list[SparseVector]: ...


class ChunkStore(Protocol):
    """Chunks with their dense + sparse vectors, one collection per embedding profile. Two
    adapters: Qdrant Edge in-process (embedded default) and a Qdrant server (qdrant-client);
    tests/integration/test_chunk_store_contract.py holds both to the same behaviour."""

    @property
    def collection(self) -> str: ...

    def sibling(self, collection: str) -> ChunkStore:
        """The same store on another collection (another embedding profile's vectors)."""
        ...

    def ensure_collection(self, dense_dim: int, sparse_idf: bool) -> None: ...

    def create_metadata_index(self, key: str) -> None:
        """Index ``metadata.<key>`` (keyword) so filters on it stay cheap."""
        ...

    def upsert(self, records: Sequence[ChunkRecord]) -> None: ...

    def delete_document(self, tenant_id: str, document_id: str) -> None: ...

    def delete_document_tail(self, tenant_id: str, document_id: str, keep: int) -> None:
        """Remove the document's chunks with index >= keep."""
        ...

    def count_document(self, tenant_id: str, document_id: str) -> int: ...

    def count_all(self) -> int: ...

    def hybrid_search(
        self,
        dense: list[float],
        sparse: SparseVector | None,
        flt: SearchFilter,
        limit: int,
        prefetch_limit: int,
        context: Sequence[ContextQuery] = (),
    ) -> list[ScoredChunk]:
        """Dense and sparse lists fused; ``context``: further queries (a follow-up's earlier
        turn) whose lists are fused in too, at their weight (RRF only)."""
        ...

    def dense_search(
        self, dense: list[float], flt: SearchFilter, limit: int
    ) -> list[ScoredChunk]: ...

    def sparse_search(
        self, sparse: SparseVector, flt: SearchFilter, limit: int
    ) -> list[ScoredChunk]: ...

    def ping(self) -> bool: ...

    def close(self) -> None: ...


class LLM(Protocol):
    """A chat model behind an OpenAI-compatible API (vLLM, llama.cpp server, ...)."""

    @property
    def model_name(self) -> str: ...

    def complete(
        self,
        messages: Sequence[ChatMessage],
        max_tokens: int | None = None,
        model: str | None = None,
    ) -> Completion:
        """``model``: another model (or LoRA adapter) on the same server; None: the default."""
        ...

    def stream(
        self,
        messages: Sequence[ChatMessage],
        max_tokens: int | None = None,
        model: str | None = None,
    ) -> Iterator[str]: ...

    def ping(self) -> bool: ...


class Reranker(Protocol):
    """Reorders retrieved chunks by reading question and chunk together (cross-encoder)."""

    def warm_up(self) -> None: ...

    def rerank(
        self, question: str, chunks: Sequence[ScoredChunk], top_k: int
    ) -> list[ScoredChunk]: ...


class DocumentParser(Protocol):
    def parse(
        self,
        path: Path,
        content_type: str,
        filename: str,
        on_page: Callable[[int, int], None] | None = None,
    ) -> ParsedDocument:
        """``on_page(done, total)`` is called after each page that needs slow work (OCR)."""
        ...


class OcrEngine(Protocol):
    """Text out of a page image, offline (the models ship inside an installed package)."""

    @property
    def name(self) -> str: ...

    def warm_up(self) -> None: ...

    def recognize(self, image: PILImage) -> OcrPage: ...


class ConversationStore(Protocol):
    """Conversations of one caller: every method is keyed on (tenant, actor), and someone
    else's conversation is indistinguishable from a missing one."""

    def create(
        self, tenant_id: str, actor: str, kb: str, title: str = ""
    ) -> ConversationRecord: ...

    def get(
        self, tenant_id: str, actor: str, conversation_id: str, with_turns: bool = True
    ) -> ConversationRecord | None: ...

    def list(
        self, tenant_id: str, actor: str, limit: int = 50, offset: int = 0
    ) -> list[ConversationRecord]: ...

    def append_turn(
        self,
        tenant_id: str,
        actor: str,
        conversation_id: str,
        *,
        question: str,
        search_query: str,
        rewrite_method: str,
        response: dict[str, Any],
    ) -> ConversationTurnRecord | None: ...

    def delete(self, tenant_id: str, actor: str, conversation_id: str) -> bool: ...

    def purge_expired(self, retention_days: int | None) -> int: ...


@runtime_checkable
class CollectionAdmin(Protocol):
    """What a zero-downtime re-index needs of a store beyond ChunkStore: list what a collection
    holds, drop it, and (where the engine has them) move a collection alias."""

    def document_ids(self, tenant_id: str | None = None) -> set[tuple[str, str]]:
        """(tenant id, document id) of every document with chunks in the collection."""
        ...

    def drop_collection(self) -> None: ...

    def point_alias(self, alias: str, collection: str) -> None:
        """Make ``alias`` name ``collection`` atomically."""
        ...


# -- the stores every deployment has ---------------------------------------------------------
@runtime_checkable
class MetadataStore(Protocol):
    """Documents, their jobs and knowledge-base records, always scoped by tenant (SQLite in the
    embedded default, PostgreSQL in production: ``SqlMetadataStore`` serves both)."""

    def create_schema(self) -> None: ...

    def ping(self) -> bool: ...

    def close(self) -> None: ...

    def create_document_with_job(
        self,
        *,
        document_id: str,
        tenant_id: str,
        content_hash: str,
        filename: str,
        content_type: str,
        size_bytes: int,
        metadata: dict[str, Any],
        groups: list[str],
        kb: str = "default",
    ) -> tuple[DocumentRecord, JobRecord, bool]:
        """The row and its job in one transaction; the bool is True when the document is new."""
        ...

    def get_document(self, tenant_id: str, document_id: str) -> DocumentRecord | None: ...

    def get_document_any_tenant(self, document_id: str) -> DocumentRecord | None:
        """For the worker, which is handed an id only."""
        ...

    def list_documents(
        self,
        tenant_id: str,
        status: DocumentStatus | None = None,
        limit: int = 100,
        offset: int = 0,
        kb: str | None = None,
    ) -> list[DocumentRecord]: ...

    def count_by_status(self) -> dict[str, int]: ...

    def set_status(
        self,
        document_id: str,
        status: DocumentStatus,
        *,
        error: str | None = None,
        chunk_count: int | None = None,
        pages: int | None = None,
        progress: float | None = None,
        ocr_pages: Sequence[int] | None = None,
        ocr_confidence: float | None = None,
    ) -> bool:
        """False when the document is gone (deleted while it was being processed).
        ``ocr_pages`` given (also empty) replaces the OCR'd pages and their mean confidence."""
        ...

    def record_attempt(self, document_id: str) -> int: ...

    def new_job(
        self, tenant_id: str, document_id: str, reset_attempts: bool = True
    ) -> JobRecord: ...

    def delete_document(self, tenant_id: str, document_id: str) -> bool: ...

    def hash_in_use(self, content_hash: str) -> bool: ...

    def stale_documents(self, older_than: timedelta) -> list[DocumentRecord]: ...

    def create_kb(self, kb: KnowledgeBase) -> KnowledgeBase: ...

    def get_kb(self, tenant_id: str, name: str) -> KnowledgeBase | None: ...

    def list_kbs(self, tenant_id: str) -> list[KnowledgeBase]: ...

    def count_kbs(self, tenant_id: str) -> int: ...

    def delete_kb(self, tenant_id: str, name: str) -> bool: ...

    def kb_document_counts(self, tenant_id: str) -> dict[str, int]: ...

    def document_ids_in_kb(self, tenant_id: str, name: str) -> list[str]: ...

    def get_job(self, tenant_id: str, job_id: str) -> JobRecord | None: ...

    def latest_job(self, document_id: str) -> JobRecord | None: ...

    def set_job_progress(self, document_id: str, progress: float) -> None: ...


@runtime_checkable
class BlobStorage(Protocol):
    """Uploaded files by content hash: staged while hashed, committed durably, then immutable."""

    def path_for(self, content_hash: str) -> Path: ...

    def stage(self, source: BinaryIO, max_bytes: int) -> tuple[Path, str, int]:
        """Copy ``source`` to a temporary file while hashing it: (path, sha256, size). Raises
        FileTooLarge past ``max_bytes`` and leaves nothing behind."""
        ...

    def commit(self, tmp: Path, content_hash: str) -> Path: ...

    def discard(self, tmp: Path) -> None: ...

    def exists(self, content_hash: str) -> bool: ...

    def delete(self, content_hash: str) -> None: ...


@runtime_checkable
class IngestQueue(Protocol):
    """Where the API hands a document to the workers (Celery on Redis, RabbitMQ or SQLite)."""

    def enqueue_ingest(self, document_id: str) -> None: ...

    def ping(self) -> bool: ...

    def depth(self) -> int | None:
        """Messages waiting, or None when the broker cannot say."""
        ...


@runtime_checkable
class KnowledgeBases(Protocol):
    """A tenant's collections: the default one plus those created through the API."""

    @property
    def profiles(self) -> list[str]: ...

    def default(self, tenant_id: str) -> KnowledgeBase: ...

    def get(self, tenant_id: str, name: str) -> KnowledgeBase | None: ...

    def require(self, tenant_id: str, name: str) -> KnowledgeBase:
        """Raises KnowledgeBaseNotFound."""
        ...

    def list(self, tenant_id: str) -> list[tuple[KnowledgeBase, int]]: ...

    def create(self, kb: KnowledgeBase) -> KnowledgeBase: ...

    def chunking(self, kb: KnowledgeBase) -> tuple[int, int]:
        """(max_tokens, overlap_tokens) for documents of this knowledge base."""
        ...

    def forget(self, tenant_id: str, name: str) -> bool: ...
