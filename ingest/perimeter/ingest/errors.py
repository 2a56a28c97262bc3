"""Input errors, kept importable here for callers of the ingest package; they are defined in
``perimeter.errors`` (below both the parser adapter and this package)."""

from perimeter.errors import InvalidDocument, ParseError, UnsupportedFileType

__all__ = ["InvalidDocument", "ParseError", "UnsupportedFileType"]
