"""Exceptions that backend adapters raise and callers catch.

They live apart from the adapters so that the API, the workers and the services can handle a
backend failure without importing (and so loading) any adapter or its client library.
"""

from __future__ import annotations

__all__ = [
    "FileTooLarge",
    "KnowledgeBaseExists",
    "LLMContextExceeded",
    "LLMUnavailable",
    "StoreUnavailable",
]


class StoreUnavailable(RuntimeError):
    """The vector store cannot be reached; callers answer 503 with Retry-After. ``where``: the
    Qdrant server URL, when the store is a server."""

    def __init__(self, message: str, where: str | None = None) -> None:
        super().__init__(message)
        self.where = where


class LLMContextExceeded(ValueError):
    """The prompt (plus the answer's token budget) does not fit the model's context window.

    vLLM answers 400 ("This model's maximum context length is N tokens ..."), llama.cpp's
    server 400 too; it is the request's size, not the server's health, so it is no 503: the
    answer service sends fewer sources, and the API answers a clear 400 when even one is too
    many."""


class LLMUnavailable(RuntimeError):
    """The model server is down, timing out or erroring: callers answer 503, never hang."""


class FileTooLarge(ValueError):
    """An upload past the per-file limit (the blob store stops reading at the limit)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"file exceeds the {limit // (1024 * 1024)} MiB per-file limit")
        self.limit = limit


class KnowledgeBaseExists(Exception):
    """A knowledge base of that name already exists in the tenant."""
