"""Exceptions that backend adapters raise and callers catch.

They live apart from the adapters so that the API, the workers and the services can handle a
backend failure without importing (and so loading) any adapter or its client library.
"""

from __future__ import annotations

__all__ = ["StoreUnavailable"]


class StoreUnavailable(RuntimeError):
    """The vector store cannot be reached; callers answer 503 with Retry-After. ``where``: the
    Qdrant server URL, when the store is a server."""

    def __init__(self, message: str, where: str | None = None) -> None:
        super().__init__(message)
        self.where = where
