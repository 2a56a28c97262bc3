"""Media types Perimeter ingests, and the one rule for decoding a text upload.

Below both users: upload validation (``perimeter.ingest.validation``) decides a file's type and
the parser adapter (``perimeter.backends.unstructured_parser``) dispatches on it, and both decode
text with :func:`decode_text`, so what validation accepted is exactly what gets indexed.
"""

from __future__ import annotations

import unicodedata

from perimeter.errors import InvalidDocument, UnsupportedFileType

PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
HTML = "text/html"
MARKDOWN = "text/markdown"
PLAIN = "text/plain"
CSV = "text/csv"
EMAIL = "message/rfc822"
# Images are read by OCR (perimeter.backends.ocr); a multi-page TIFF is one document.
PNG = "image/png"
JPEG = "image/jpeg"
TIFF = "image/tiff"

SUPPORTED_TYPES: frozenset[str] = frozenset(
    {PDF, DOCX, PPTX, XLSX, HTML, MARKDOWN, PLAIN, CSV, EMAIL, PNG, JPEG, TIFF}
)
TEXT_TYPES: frozenset[str] = frozenset({HTML, MARKDOWN, PLAIN, CSV, EMAIL})

# Share of characters that may be control characters before "text" is judged binary.
MAX_CONTROL_RATIO = 0.05
MIN_PRINTABLE_RATIO_LATIN1 = 0.95


def control_ratio(text: str) -> float:
    if not text:
        return 0.0
    controls = sum(1 for ch in text if unicodedata.category(ch) == "Cc" and ch not in "\t\n\r\f\v")
    return controls / len(text)


def latin1_or_reject(data: bytes) -> str:
    text = data.decode("latin-1")
    printable = sum(1 for ch in text if ch.isprintable() or ch in "\t\n\r\f\v")
    if text and printable / len(text) >= MIN_PRINTABLE_RATIO_LATIN1:
        return text
    raise UnsupportedFileType(
        "binary file of an unrecognised type (not UTF-8 text): supported types are PDF, DOCX, "
        "PPTX, XLSX, HTML, Markdown, plain text, CSV and e-mail (.eml)"
    )


def decode_text(data: bytes) -> str:
    """The text of a text upload: UTF-8 (a BOM is dropped), else Latin-1 when the bytes are
    plausibly Latin-1 text (no NUL, mostly printable). The parser decodes with this same rule,
    so what validation accepted is exactly what gets indexed."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise InvalidDocument("UTF-16 text is not supported: save the file as UTF-8")
    if b"\x00" in data:
        raise UnsupportedFileType("binary file (contains NUL bytes), not text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            text = latin1_or_reject(data)
        except UnsupportedFileType as exc:
            raise InvalidDocument(
                "text is not valid UTF-8 (nor plausible Latin-1): save the file as UTF-8"
            ) from exc
    if control_ratio(text) > MAX_CONTROL_RATIO:
        raise UnsupportedFileType("binary file (too many control characters), not text")
    return text
