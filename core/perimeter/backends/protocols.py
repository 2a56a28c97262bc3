"""One Protocol per swappable backend. Implementations live beside this file.

Constructors are cheap: nothing loads a model or opens a connection until first use or an
explicit ``warm_up()``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from perimeter.domain import (
    ChatMessage,
    ChunkRecord,
    Completion,
    EncodedText,
    ParsedDocument,
    ScoredChunk,
    SearchFilter,
    SparseVector,
)


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
    def ensure_collection(self, dense_dim: int, sparse_idf: bool) -> None: ...

    def upsert(self, records: Sequence[ChunkRecord]) -> None: ...

    def delete_document(self, tenant_id: str, document_id: str) -> None: ...

    def delete_document_tail(self, tenant_id: str, document_id: str, keep: int) -> None:
        """Remove the document's chunks with index >= keep."""
        ...

    def count_document(self, tenant_id: str, document_id: str) -> int: ...

    def hybrid_search(
        self,
        dense: list[float],
        sparse: SparseVector | None,
        flt: SearchFilter,
        limit: int,
        prefetch_limit: int,
    ) -> list[ScoredChunk]: ...

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
    def parse(self, path: Path, content_type: str, filename: str) -> ParsedDocument: ...
