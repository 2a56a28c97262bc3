"""Why an upload or a parse was refused, in words a user can act on.

All three subclass ``ValueError`` so a caller that only knows "bad input" can catch them together;
the API maps them to 4xx answers and the worker stores ``str(exc)`` as the document's error.
"""

from __future__ import annotations


class UnsupportedFileType(ValueError):
    """The bytes are a format the platform does not ingest (image, legacy .doc, zip, ...)."""


class InvalidDocument(ValueError):
    """A supported format, but this file is broken, hostile, encrypted or empty."""


class ParseError(ValueError):
    """The parser could not turn the file into text (corrupt, scanned, no extractable text)."""
