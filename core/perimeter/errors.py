"""Errors that every layer may raise or catch, so no layer imports another's to name them.

Input errors say why an upload or a parse was refused, in words a user can act on. All three
subclass ``ValueError`` so a caller that only knows "bad input" can catch them together; the API
maps them to 4xx answers and the worker stores ``str(exc)`` as the document's error.

``APIError`` is the one error shape of the HTTP API (``{"error": {"code", "message",
"details"}}``); it lives here so that the services below the API can raise it without importing
the API package.
"""

from __future__ import annotations

from typing import Any


class UnsupportedFileType(ValueError):
    """The bytes are a format the platform does not ingest (image, legacy .doc, zip, ...)."""


class InvalidDocument(ValueError):
    """A supported format, but this file is broken, hostile, encrypted or empty."""


class ParseError(ValueError):
    """The parser could not turn the file into text (corrupt, scanned, no extractable text)."""


class APIError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers
