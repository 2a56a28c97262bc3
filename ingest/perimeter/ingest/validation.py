"""Upload gatekeeping: what a file really is, and whether it is safe to hand to the parser.

The API process runs this on every upload before anything is queued, so it must stay light: it
imports only the standard library and pypdf, never ``unstructured`` (loading the parser stack
costs seconds and hundreds of MB, which the API must not pay).

Types are decided by content, never by the name or the client's declared type: a renamed
executable must not reach the parser as "report.pdf". The extension and the declared type only
choose among the plain-text flavours (Markdown, CSV, plain text), which bytes cannot tell apart.
"""

from __future__ import annotations

import codecs
import re
import unicodedata
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from perimeter.errors import InvalidDocument, UnsupportedFileType
from perimeter.ingest.images import IMAGE_TYPES, check_image, sniff_image
from perimeter.mime import (  # noqa: F401  (re-exported: the types are part of this module's API)
    CSV,
    DOCX,
    EMAIL,
    HTML,
    MARKDOWN,
    MAX_CONTROL_RATIO,
    PDF,
    PLAIN,
    PPTX,
    SUPPORTED_TYPES,
    TEXT_TYPES,
    XLSX,
    decode_text,
)
from perimeter.mime import (
    control_ratio as _control_ratio,
)
from perimeter.mime import (
    latin1_or_reject as _latin1_or_reject,
)

HEAD_BYTES = 8192
DEFAULT_MAX_UNCOMPRESSED_BYTES = 500 * 1024 * 1024
DEFAULT_MAX_COMPRESSION_RATIO = 100.0
# Small members legitimately compress far beyond 100:1 (an empty styles part, a repetitive
# settings.xml); only a large member with an extreme ratio is a bomb signal.
RATIO_CHECK_MIN_BYTES = 10 * 1024 * 1024
MAX_ZIP_MEMBERS = 10_000

# The part every well-formed package of each kind has (python-docx, python-pptx and openpyxl
# all read these names).
_OOXML_MAIN_PART = {
    DOCX: "word/document.xml",
    PPTX: "ppt/presentation.xml",
    XLSX: "xl/workbook.xml",
}
_OOXML_BY_EXTENSION = {".docx": DOCX, ".pptx": PPTX, ".xlsx": XLSX}
_OOXML_DIR_HINT = {b"word/": DOCX, b"ppt/": PPTX, b"xl/": XLSX}

_EXTENSION_TEXT_TYPES = {
    ".md": MARKDOWN,
    ".markdown": MARKDOWN,
    ".mdown": MARKDOWN,
    ".csv": CSV,
    ".txt": PLAIN,
    ".text": PLAIN,
    ".log": PLAIN,
    ".html": HTML,
    ".htm": HTML,
    ".eml": EMAIL,
}
_DECLARED_TEXT_TYPES = {
    "text/markdown": MARKDOWN,
    "text/x-markdown": MARKDOWN,
    "text/csv": CSV,
    "application/csv": CSV,
    "text/plain": PLAIN,
}

# Binary formats we recognise only to refuse them with a helpful message.
_KNOWN_BINARY: list[tuple[bytes, str]] = [
    (
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
        "legacy Office binary format (.doc/.xls/.ppt/.msg); save it as .docx/.xlsx/.pptx",
    ),
    # PNG, JPEG and TIFF are taken (OCR; perimeter.ingest.images checks them).
    (b"GIF87a", "GIF image (save it as PNG)"),
    (b"GIF89a", "GIF image (save it as PNG)"),
    (b"\x1f\x8b", "gzip archive (archives are not supported)"),
    (b"7z\xbc\xaf\x27\x1c", "7-Zip archive (archives are not supported)"),
    (b"Rar!\x1a\x07", "RAR archive (archives are not supported)"),
    (b"\x7fELF", "executable (ELF)"),
    (b"{\\rtf", "RTF document; save it as .docx"),
]

_EMAIL_HEADER_LINE = re.compile(rb"^[A-Za-z][A-Za-z0-9-]*:[ \t]")
_EMAIL_KEY_HEADERS = {
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"received",
    b"mime-version",
    b"return-path",
}
_HTML_START = re.compile(
    rb"^(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html)\b", re.I | re.S
)
_HTML_ANYWHERE = re.compile(rb"<(?:html|head|body)\b", re.I)
_MARKDOWN_HINT = re.compile(r"^(?:#{1,6} \S|```|\* \S|- \S|\d+\. \S)", re.M)

_WINDOWS_RESERVED = {
    "CON", "PRN", "AUX", "NUL",
    *(f"COM{i}" for i in range(1, 10)),
    *(f"LPT{i}" for i in range(1, 10)),
}  # fmt: skip
_UNSAFE_FILENAME_CHARS = re.compile(r'[<>:"|?*]')
MAX_FILENAME_BYTES = 255


def _extension(filename: str) -> str:
    return PurePosixPath(filename.replace("\\", "/")).suffix.lower()


def _is_pdf(head: bytes) -> bool:
    # The PDF spec lets readers accept junk before the header within the first 1024 bytes.
    return b"%PDF-" in head[:1024]


def _ooxml_hint(head: bytes, filename: str) -> str | None:
    """Best guess of the Office flavour from the first local headers' names or the extension;
    :func:`validate_upload` confirms it against the package's parts."""
    for marker, mime in _OOXML_DIR_HINT.items():
        if marker in head:
            return mime
    return _OOXML_BY_EXTENSION.get(_extension(filename))


def _looks_like_email(head: bytes) -> bool:
    """RFC 822 header block: the first line and every line up to the blank line are headers
    (or folded continuations), and at least two well-known headers including From/Received."""
    block = re.split(rb"\r?\n\r?\n", head.lstrip(b"\xef\xbb\xbf"), maxsplit=1)[0]
    lines = block.splitlines()
    if not lines or not _EMAIL_HEADER_LINE.match(lines[0]):
        return False
    names: set[bytes] = set()
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            continue
        if not _EMAIL_HEADER_LINE.match(line):
            return False
        names.add(line.split(b":", 1)[0].lower())
    known = names & _EMAIL_KEY_HEADERS
    return len(known) >= 2 and bool(known & {b"from", b"received", b"message-id", b"mime-version"})


def _decode_head(head: bytes, complete: bool) -> str:
    """Decode a prefix of a file, tolerating a multi-byte character cut at its end."""
    if b"\x00" in head:
        raise UnsupportedFileType(
            "binary file of an unrecognised type: supported types are PDF, DOCX, PPTX, XLSX, "
            "HTML, Markdown, plain text, CSV and e-mail (.eml)"
        )
    try:
        decoder = codecs.getincrementaldecoder("utf-8-sig")()
        return decoder.decode(head, final=complete)
    except UnicodeDecodeError:
        return _latin1_or_reject(head)


def _text_flavour(text: str, head: bytes, filename: str, declared_type: str | None) -> str:
    ext = _extension(filename)
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if _HTML_START.match(stripped) or (
        stripped.startswith(b"<") and _HTML_ANYWHERE.search(stripped)
    ):
        return HTML
    if _looks_like_email(head):
        return EMAIL
    by_ext = _EXTENSION_TEXT_TYPES.get(ext)
    if by_ext == HTML:
        # Named .html but no markup at its start: only markup-looking content is HTML.
        return HTML if stripped.startswith(b"<") else PLAIN
    if by_ext == EMAIL:
        # An .eml without a header block is just text; the e-mail parser would find no body.
        return PLAIN
    if by_ext is not None:
        return by_ext
    declared = (declared_type or "").split(";", 1)[0].strip().lower()
    if declared in _DECLARED_TEXT_TYPES:
        return _DECLARED_TEXT_TYPES[declared]
    if _MARKDOWN_HINT.search(text):
        return MARKDOWN
    return PLAIN


def sniff_content_type(head: bytes, filename: str, declared_type: str | None = None) -> str:
    """Canonical MIME type from the first bytes of a file (see :data:`SUPPORTED_TYPES`).

    Raises :class:`InvalidDocument` for an empty file and :class:`UnsupportedFileType` for
    anything that is not one of the supported formats. Zip-based Office files are only guessed
    here; :func:`validate_upload` opens the package to confirm.
    """
    if not head:
        raise InvalidDocument("the file is empty")
    if _is_pdf(head):
        return PDF
    if (image := sniff_image(head)) is not None:
        return image
    if head.startswith(b"PK\x03\x04"):
        hint = _ooxml_hint(head, filename)
        if hint is None:
            if b"mimetypeapplication/vnd.oasis.opendocument" in head[:200]:
                raise UnsupportedFileType(
                    "OpenDocument files (.odt/.ods/.odp) are not supported: save as .docx/.xlsx/"
                    ".pptx"
                )
            raise UnsupportedFileType(
                "zip archive that is not a Word, PowerPoint or Excel document: upload the "
                "documents themselves, not an archive"
            )
        return hint
    if head.startswith((b"PK\x05\x06", b"PK\x07\x08")):
        raise UnsupportedFileType("empty or split zip archive: not a supported document")
    for magic, what in _KNOWN_BINARY:
        if head.startswith(magic):
            raise UnsupportedFileType(f"unsupported file type: {what}")
    if head.startswith(b"MZ") and b"\x00" in head[:64]:
        # Checked with a NUL so that a text file that merely starts with "MZ" is not refused.
        raise UnsupportedFileType("unsupported file type: Windows executable")
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise InvalidDocument("UTF-16 text is not supported: save the file as UTF-8")
    text = _decode_head(head, complete=len(head) < HEAD_BYTES)
    if _control_ratio(text) > MAX_CONTROL_RATIO:
        raise UnsupportedFileType(
            "binary file of an unrecognised type: supported types are PDF, DOCX, PPTX, XLSX, "
            "HTML, Markdown, plain text, CSV and e-mail (.eml)"
        )
    if not text.strip() and len(head) < HEAD_BYTES:
        raise InvalidDocument("the file contains only whitespace")
    return _text_flavour(text, head, filename, declared_type)


def _check_pdf(
    path: Path,
    max_uncompressed_bytes: int = DEFAULT_MAX_UNCOMPRESSED_BYTES,
    max_compression_ratio: float = DEFAULT_MAX_COMPRESSION_RATIO,
) -> None:
    from pypdf import PdfReader  # local: the API pays for pypdf only when a PDF arrives

    try:
        reader = PdfReader(path, strict=False)
        if reader.is_encrypted:
            # An owner-password-only PDF (restrictions, no open password) opens with "" and
            # parses fine; only a PDF that needs a password to open is refused.
            try:
                opened = reader.decrypt("")
            except Exception as exc:  # pypdf raises several types for unsupported ciphers
                raise InvalidDocument(
                    f"the PDF is encrypted with an unsupported method ({exc}); upload an "
                    "unencrypted copy"
                ) from exc
            if not opened:
                raise InvalidDocument(
                    "the PDF is password-protected: upload a copy without an open password"
                )
        page_count = len(reader.pages)
        _check_pdf_streams(reader, max_uncompressed_bytes, max_compression_ratio)
    except InvalidDocument:
        raise
    except Exception as exc:
        # Hostile or broken PDFs raise anything from PdfReadError to KeyError or
        # RecursionError inside pypdf; all mean "cannot be read".
        raise InvalidDocument(f"the PDF is corrupt or unreadable ({type(exc).__name__})") from exc
    if page_count == 0:
        raise InvalidDocument("the PDF has no pages")


# pdfminer inflates every content stream whole, with no limit: a 100 KB PDF whose page stream
# inflates to 100 MB took 10 s and 700 MB of memory to parse. Streams pdfminer never decodes
# (images) are skipped; others are inflated here in bounded steps and measured, with the same
# limits as a zip package: a total, and a ratio for any stream past RATIO_CHECK_MIN_BYTES.
_INFLATE_STEP = 4 * 1024 * 1024


def _check_pdf_streams(reader: Any, max_total: int, max_ratio: float) -> None:
    import zlib

    from pypdf.generic import IndirectObject, StreamObject

    total = 0
    stored = 0
    for generation, objects in reader.xref.items():
        for number in objects:
            try:
                obj = reader.get_object(IndirectObject(number, generation, reader))
            except Exception:
                continue  # unreadable objects are the parser's problem, not a size risk
            if not isinstance(obj, StreamObject) or obj.get("/Subtype") == "/Image":
                continue
            filters = obj.get("/Filter")
            first = filters[0] if isinstance(filters, list) and filters else filters
            if first not in ("/FlateDecode", "/Fl"):
                continue
            raw = obj._data or b""
            inflater = zlib.decompressobj()
            size = 0
            try:
                chunk = inflater.decompress(raw, _INFLATE_STEP)
                while chunk:
                    size += len(chunk)
                    if total + size > max_total:
                        raise InvalidDocument(
                            f"the PDF expands to more than {max_total} bytes "
                            "(possible decompression bomb)"
                        )
                    chunk = inflater.decompress(inflater.unconsumed_tail, _INFLATE_STEP)
            except zlib.error:
                pass  # a broken stream: pdfminer will fail on it too, without inflating it
            total += size
            stored += len(raw)
            if size >= RATIO_CHECK_MIN_BYTES and size / max(len(raw), 1) > max_ratio:
                raise InvalidDocument(
                    f"a PDF stream inflates {size / max(len(raw), 1):.0f}:1 "
                    "(possible decompression bomb)"
                )
    # Many streams each under RATIO_CHECK_MIN_BYTES add up, as the members of a zip do.
    _check_aggregate_ratio(total, stored, "PDF's compressed streams", max_ratio)


def _check_ooxml(
    path: Path,
    hint: str | None,
    max_uncompressed_bytes: int,
    max_compression_ratio: float,
) -> str:
    """Open the zip package and decide its Office type from its parts (``hint``, from the first
    bytes or the extension, only decides whether a failure is "corrupt Office file" or "not an
    Office file")."""
    what = "Office file" if hint else "zip archive"
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            _check_zip_sizes(infos, what, max_uncompressed_bytes, max_compression_ratio)
            names = {info.filename for info in infos}
            # Read only after the size checks, and boundedly: an ODF "mimetype" is ~50 bytes.
            odf = "mimetype" in names and archive.open("mimetype").read(200).startswith(
                b"application/vnd.oasis.opendocument"
            )
    except InvalidDocument:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        if hint is None:
            raise UnsupportedFileType(
                f"unreadable zip archive ({exc}): not a supported document"
            ) from exc
        raise InvalidDocument(
            f"the Office file is corrupt (not a readable zip package: {exc})"
        ) from exc
    found = [mime for mime, part in _OOXML_MAIN_PART.items() if part in names]
    if len(found) == 1 and "[Content_Types].xml" in names:
        return found[0]
    if odf:
        raise UnsupportedFileType(
            "OpenDocument files (.odt/.ods/.odp) are not supported: save as .docx/.xlsx/.pptx"
        )
    if hint is None:
        raise UnsupportedFileType(
            "zip archive that is not a Word, PowerPoint or Excel document: upload the documents "
            "themselves, not an archive"
        )
    kind = {DOCX: ".docx", PPTX: ".pptx", XLSX: ".xlsx"}[hint]
    raise InvalidDocument(
        f"the {kind} file is corrupt: it lacks {_OOXML_MAIN_PART[hint]} or [Content_Types].xml"
    )


def _check_zip_sizes(
    infos: list[zipfile.ZipInfo],
    what: str,
    max_uncompressed_bytes: int,
    max_compression_ratio: float,
) -> None:
    """Refuse decompression bombs before any member is read.

    Sizes come from the central directory. Python's zipfile (which python-docx, python-pptx and
    openpyxl use) stops at a member's declared size and checks its CRC, so a member cannot
    inflate past what it declares: bounding the declared sizes bounds the real work. Overlapping
    members (the "non-recursive" bomb) are each counted, so they add up too.
    """
    if len(infos) > MAX_ZIP_MEMBERS:
        raise InvalidDocument(f"the {what} has too many members ({len(infos)})")
    total = 0
    compressed = 0
    for info in infos:
        compressed += info.compress_size
        total += info.file_size
        if total > max_uncompressed_bytes:
            raise InvalidDocument(
                f"the {what} expands to more than {max_uncompressed_bytes} bytes "
                "(possible decompression bomb)"
            )
        if info.file_size >= RATIO_CHECK_MIN_BYTES:
            ratio = info.file_size / max(info.compress_size, 1)
            if ratio > max_compression_ratio:
                raise InvalidDocument(
                    f"the {what}'s member {info.filename!r} has a compression ratio of "
                    f"{ratio:.0f}:1 (possible decompression bomb)"
                )
    # Across all members too: many members each just under RATIO_CHECK_MIN_BYTES (4 sheets of
    # 9.5 MiB XML in a 135 KB workbook, 289:1) passed the per-member check and kept a worker
    # thread busy for 860 s.
    _check_aggregate_ratio(total, compressed, what, max_compression_ratio)


def _check_aggregate_ratio(inflated: int, stored: int, what: str, max_ratio: float) -> None:
    if inflated >= RATIO_CHECK_MIN_BYTES and inflated / max(stored, 1) > max_ratio:
        raise InvalidDocument(
            f"the {what} inflates {inflated / max(stored, 1):.0f}:1 in all ({inflated} bytes "
            f"from {stored}; at most {max_ratio:.0f}:1 past {RATIO_CHECK_MIN_BYTES} bytes): "
            "possible decompression bomb"
        )


def _check_text(path: Path, mime: str) -> None:
    decoded = decode_text(path.read_bytes())
    if not decoded.strip():
        raise InvalidDocument("the file contains only whitespace")
    if mime == MARKDOWN:
        _check_markdown_cost(decoded)


# Python-Markdown's inline link/image patterns rescan the rest of a block for every unclosed
# "[": parse time grows with the square of their count per block (20 000 in one 60 KB paragraph
# took 212 s; 50 000 did not finish in 120 s). The worker's time limit does not reach the
# embedded default's thread pool, so refuse such files here. This budget is ~4 s of parsing;
# real documents stay far below it (a paragraph with 100 links costs 10 000).
MAX_MARKDOWN_BRACKET_COST = 4_000_000
_BLANK_LINE = re.compile(r"\n[ \t]*\n")


def _check_markdown_cost(text: str) -> None:
    cost = sum(block.count("[") ** 2 for block in _BLANK_LINE.split(text))
    if cost > MAX_MARKDOWN_BRACKET_COST:
        raise InvalidDocument(
            "the Markdown has pathological bracket nesting (thousands of '[' in one paragraph), "
            "which would stall the parser; upload it as plain text (.txt) instead"
        )


def validate_upload(
    path: Path,
    filename: str,
    declared_type: str | None,
    *,
    max_uncompressed_bytes: int = DEFAULT_MAX_UNCOMPRESSED_BYTES,
    max_compression_ratio: float = DEFAULT_MAX_COMPRESSION_RATIO,
) -> str:
    """Check a stored upload and return its canonical MIME type.

    ``declared_type`` (the client's Content-Type) is advisory: browsers derive it from the
    extension and get it wrong (Windows sends CSV as ``application/vnd.ms-excel``), so it only
    breaks ties among plain-text flavours and never overrides what the bytes say.
    """
    try:
        with path.open("rb") as fh:
            head = fh.read(HEAD_BYTES)
    except OSError as exc:
        raise InvalidDocument(f"the upload could not be read ({exc.strerror})") from exc
    if head.startswith(b"PK\x03\x04"):
        # The package's parts decide, not the head: a member list longer than the head (or
        # an unusual member order) must not turn a real .docx into "unsupported zip".
        hint = _ooxml_hint(head, filename)
        return _check_ooxml(path, hint, max_uncompressed_bytes, max_compression_ratio)
    mime = sniff_content_type(head, filename, declared_type)
    if mime == PDF:
        _check_pdf(path, max_uncompressed_bytes, max_compression_ratio)
    elif mime in IMAGE_TYPES:
        check_image(path, mime)
    else:
        _check_text(path, mime)
    return mime


def safe_filename(name: str) -> str:
    """A display/storage-safe file name: the last path component of ``name`` with control and
    formatting characters (including bidi overrides that disguise extensions) removed, shell-
    and Windows-hostile characters replaced, at most 255 UTF-8 bytes, never empty."""
    name = unicodedata.normalize("NFC", name or "")
    # Both separators, whatever the client OS: "..\\..\\x" from Windows is a traversal too.
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch) not in {"Cc", "Cf"})
    name = _UNSAFE_FILENAME_CHARS.sub("_", name)
    # Leading dots would make hidden files (and "." / ".." are traversal); trailing dots and
    # spaces are silently dropped by Windows, which would change the name.
    name = name.strip().lstrip(".").rstrip(". ")
    if not name:
        return "upload"
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    if stem.upper() in _WINDOWS_RESERVED:
        name = f"_{name}"
        stem = f"_{stem}"
    if len(name.encode("utf-8")) > MAX_FILENAME_BYTES:
        suffix = f".{ext}" if dot and len(ext.encode("utf-8")) <= 16 else ""
        base = stem if suffix else name
        budget = MAX_FILENAME_BYTES - len(suffix.encode("utf-8"))
        base = base.encode("utf-8")[:budget].decode("utf-8", errors="ignore").rstrip(". ")
        name = (base or "upload") + suffix
    return name or "upload"
