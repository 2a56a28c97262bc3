"""A base for embedders that wrap another one and change only how documents are encoded
(cross-document micro-batching, the eval harness's precomputed vectors)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from perimeter.backends.protocols import Embedder
from perimeter.domain import EncodedText


class EmbedderProxy:
    """Passes every :class:`Embedder` call through to ``inner``; subclasses override
    ``encode_documents``. Anything else the inner embedder has (``model``, ``is_loaded``,
    ``encode_colbert``, ...) is reached through attribute access."""

    def __init__(self, inner: Embedder) -> None:
        self._inner = inner

    @property
    def inner(self) -> Embedder:
        return self._inner

    @property
    def dimension(self) -> int:
        return self._inner.dimension

    @property
    def has_sparse(self) -> bool:
        return self._inner.has_sparse

    def warm_up(self) -> None:
        self._inner.warm_up()

    def count_tokens(self, text: str) -> int:
        return self._inner.count_tokens(text)

    def encode_queries(self, texts: Sequence[str]) -> list[EncodedText]:
        return self._inner.encode_queries(texts)

    def encode_documents(self, texts: Sequence[str]) -> list[EncodedText]:
        return self._inner.encode_documents(texts)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "_inner":
            raise AttributeError(name)
        return getattr(self._inner, name)
