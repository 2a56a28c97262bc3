"""Upload validation: sniffing by content, every rejection path, safe file names.

Tests on bytes in memory are ``unit``; tests that write a file and run ``validate_upload`` on
it (and the subprocess import check) are marked ``integration``, since they do real I/O.
"""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from perimeter.ingest.errors import InvalidDocument, UnsupportedFileType
from perimeter.ingest.validation import (
    CSV,
    DOCX,
    EMAIL,
    HEAD_BYTES,
    HTML,
    MARKDOWN,
    PDF,
    PLAIN,
    PPTX,
    SUPPORTED_TYPES,
    XLSX,
    decode_text,
    safe_filename,
    sniff_content_type,
    validate_upload,
)

try:
    from tests import docfactory as df
except ModuleNotFoundError:  # run as `pytest` without the repo root on sys.path
    import docfactory as df  # type: ignore[no-redef]

unit = pytest.mark.unit
integration = pytest.mark.integration


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


# -- sniffing (bytes only) --------------------------------------------------------------------


@unit
def test_supported_types_are_the_documented_twelve() -> None:
    images = {"image/png", "image/jpeg", "image/tiff"}
    assert {PDF, DOCX, PPTX, XLSX, HTML, MARKDOWN, PLAIN, CSV, EMAIL, *images} == SUPPORTED_TYPES
    assert len(SUPPORTED_TYPES) == 12


@unit
@pytest.mark.parametrize("name", ["doc.pdf", "doc.txt", "doc", "doc.md"])
def test_pdf_is_recognised_by_content_whatever_the_name(name: str) -> None:
    assert sniff_content_type(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", name) == PDF


@unit
def test_pdf_header_after_leading_junk_within_1024_bytes() -> None:
    assert sniff_content_type(b"\x00" * 20 + b"%PDF-1.4\n", "x") == PDF


@unit
@pytest.mark.parametrize(
    ("part", "expected"),
    [("word/document.xml", DOCX), ("ppt/presentation.xml", PPTX), ("xl/workbook.xml", XLSX)],
)
def test_office_flavour_from_member_names(part: str, expected: str) -> None:
    head = zip_bytes({part: b"<x/>", "[Content_Types].xml": b"<Types/>"})
    assert sniff_content_type(head, "no-extension") == expected


@unit
def test_office_flavour_falls_back_to_extension_for_the_head_guess() -> None:
    head = zip_bytes({"[Content_Types].xml": b"<Types/>"})
    assert sniff_content_type(head, "Report.DOCX") == DOCX


@unit
def test_plain_zip_is_unsupported() -> None:
    with pytest.raises(UnsupportedFileType, match="zip archive"):
        sniff_content_type(zip_bytes({"notes.txt": b"hello"}), "archive.zip")


@unit
def test_opendocument_is_unsupported() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("mimetype", "application/vnd.oasis.opendocument.text")
    with pytest.raises(UnsupportedFileType, match="OpenDocument"):
        sniff_content_type(buffer.getvalue(), "letter.odt")


@unit
@pytest.mark.parametrize(
    ("head", "needle"),
    [
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 100, "legacy Office"),
        (b"GIF89a" + b"\x00" * 100, "GIF"),
        (b"\x7fELF\x02\x01\x01" + b"\x00" * 100, "ELF"),
        (b"\x1f\x8b\x08\x00" + b"\x00" * 100, "gzip"),
        (b"MZ\x90\x00\x03\x00\x00\x00", "Windows executable"),
        (b"{\\rtf1\\ansi hello}", "RTF"),
    ],
)
def test_known_binary_formats_are_refused_by_name(head: bytes, needle: str) -> None:
    with pytest.raises(UnsupportedFileType, match=needle):
        sniff_content_type(head, "innocent.pdf")


@unit
def test_text_starting_with_mz_is_still_text() -> None:
    assert sniff_content_type(b"MZ stands for Mark Zbikowski.", "notes.txt") == PLAIN


@unit
def test_empty_and_blank_files_are_invalid() -> None:
    with pytest.raises(InvalidDocument, match="empty"):
        sniff_content_type(b"", "a.txt")
    with pytest.raises(InvalidDocument, match="whitespace"):
        sniff_content_type(b" \n\t\r\n ", "a.txt")


@unit
def test_random_bytes_are_unsupported() -> None:
    import random

    garbage = random.Random(7).randbytes(4096)
    with pytest.raises(UnsupportedFileType, match="binary"):
        sniff_content_type(garbage, "data.txt")


@unit
def test_control_characters_without_nul_are_binary() -> None:
    head = bytes([1, 2, 3, 4, 5, 6, 7, 8, 14, 15, 16]) * 50 + b"some text"
    with pytest.raises(UnsupportedFileType):
        sniff_content_type(head, "x.txt")


@unit
def test_utf16_is_refused_with_advice() -> None:
    with pytest.raises(InvalidDocument, match="UTF-16"):
        sniff_content_type("hello".encode("utf-16"), "x.txt")


@unit
@pytest.mark.parametrize(
    ("name", "declared", "expected"),
    [
        ("notes.md", None, MARKDOWN),
        ("notes.markdown", None, MARKDOWN),
        ("table.csv", "application/vnd.ms-excel", CSV),
        ("notes.txt", "text/markdown", PLAIN),  # a known extension beats the declared type
        ("notes", "text/markdown; charset=utf-8", MARKDOWN),
        ("notes", "text/csv", CSV),
        ("notes", None, PLAIN),
        ("notes.pdf", "application/pdf", PLAIN),  # content beats name and declared type
    ],
)
def test_text_flavour_from_extension_then_declared_type(
    name: str, declared: str | None, expected: str
) -> None:
    assert sniff_content_type(b"a,b\n1,2\nplain words", name, declared) == expected


@unit
def test_markdown_without_extension_is_recognised_by_headings() -> None:
    assert sniff_content_type(b"# Title\n\nSome text.\n", "README") == MARKDOWN


@unit
@pytest.mark.parametrize(
    "head",
    [
        b"<!DOCTYPE html><html><body>x</body></html>",
        b"\xef\xbb\xbf  <html lang='en'><p>x</p></html>",
        b"<?xml version='1.0'?>\n<!-- c --><!doctype HTML><html></html>",
        b"<div>\n<head></head><body>fragment</body>",
    ],
)
def test_html_by_content(head: bytes) -> None:
    assert sniff_content_type(head, "page.txt") == HTML


@unit
def test_html_extension_without_markup_is_plain_text() -> None:
    assert sniff_content_type(b"just words", "page.html") == PLAIN
    assert sniff_content_type(b"<p>a fragment</p>", "page.htm") == HTML


@unit
def test_email_by_headers() -> None:
    head = (
        b"Return-Path: <a@example.org>\r\nFrom: Alice <a@example.org>\r\nTo: b@example.org\r\n"
        b"Subject: Budget\r\n  continued subject\r\n\r\nHello Bob."
    )
    assert sniff_content_type(head, "message.txt") == EMAIL


@unit
def test_header_like_text_is_not_email() -> None:
    assert sniff_content_type(b"Title: Notes\nAuthor: me\n\nBody", "notes.md") == MARKDOWN
    assert sniff_content_type(b"Subject: x\n\nno sender", "mail.eml") == PLAIN


@unit
def test_latin1_text_is_accepted() -> None:
    assert sniff_content_type("Café crème, déjà vu".encode("latin-1"), "menu.txt") == PLAIN


@unit
def test_utf8_character_cut_at_head_boundary_is_tolerated() -> None:
    data = ("a" * (HEAD_BYTES - 1) + "é").encode("utf-8")  # the é straddles the boundary
    assert sniff_content_type(data[:HEAD_BYTES], "long.txt") == PLAIN


@unit
def test_decode_text_rules() -> None:
    assert decode_text(b"\xef\xbb\xbfhello") == "hello"
    assert decode_text("naïve".encode()) == "naïve"
    assert decode_text("naïve".encode("latin-1")) == "naïve"
    with pytest.raises(UnsupportedFileType):
        decode_text(b"text\x00with nul")
    with pytest.raises(InvalidDocument, match="UTF-8"):
        decode_text(bytes(range(0x80, 0xA0)) * 10)  # C1 controls: not plausible Latin-1


# -- safe_filename ----------------------------------------------------------------------------


@unit
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\system32\\cmd.exe", "cmd.exe"),
        ("C:\\Users\\eve\\Documents\\plan.docx", "plan.docx"),
        ("/absolute/path/notes.md", "notes.md"),
        ("..", "upload"),
        (".", "upload"),
        ("", "upload"),
        ("   ", "upload"),
        ("dir/", "upload"),
        (".bashrc", "bashrc"),
        ("a\x00b\nc\x1b[31m.txt", "abc[31m.txt"),
        ("invoice\u202efdp.exe", "invoicefdp.exe"),  # right-to-left override disguise
        ('what?<is>:this|"*.txt', "what__is__this___.txt"),
        ("CON.txt", "_CON.txt"),
        ("trailing dots... ", "trailing dots"),
        ("e\u0301cole.txt", "\u00e9cole.txt"),  # NFC
    ],
)
def test_safe_filename(raw: str, expected: str) -> None:
    assert safe_filename(raw) == expected


@unit
def test_safe_filename_limits_bytes_and_keeps_extension() -> None:
    name = safe_filename("x" * 400 + ".pdf")
    assert len(name.encode()) <= 255
    assert name.endswith(".pdf")
    multibyte = safe_filename("é" * 300 + ".docx")
    assert len(multibyte.encode()) <= 255
    assert multibyte.endswith(".docx")
    multibyte.encode("utf-8")  # no half characters
    no_ext = safe_filename("y" * 1000)
    assert len(no_ext.encode()) == 255


# -- validate_upload on real files ------------------------------------------------------------


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    return tmp_path


@integration
def test_each_supported_type_validates(docs: Path) -> None:
    sections = [("Leave", ["Employees get 25 days."]), ("Travel", ["Take trains."])]
    cases = {
        PDF: df.make_pdf(docs / "a.pdf", [["Heading", "Body text."]]),
        DOCX: df.make_docx(docs / "a.docx", sections),
        PPTX: df.make_pptx(docs / "a.pptx", sections),
        XLSX: df.make_xlsx(docs / "a.xlsx", {"S": [["k", "v"], ["a", 1]]}),
        HTML: df.make_html(docs / "a.html", "Handbook", sections),
        MARKDOWN: df.make_md(docs / "a.md", "Handbook", sections),
        PLAIN: df.make_txt(docs / "a.txt", ["Hello.", "World."]),
        CSV: df.make_csv(docs / "a.csv", [["k", "v"], ["a", "1"]]),
        EMAIL: df.make_eml(docs / "a.eml", "Budget", "The budget is approved."),
    }
    for expected, path in cases.items():
        assert validate_upload(path, path.name, None) == expected, path.name


@integration
def test_office_type_comes_from_parts_not_name(docs: Path) -> None:
    pptx = df.make_pptx(docs / "slides.docx", [("T", ["x"])])
    assert validate_upload(pptx, "slides.docx", DOCX) == PPTX
    docx = df.make_docx(docs / "blob", [("T", ["x"])])
    assert validate_upload(docx, "blob", "application/octet-stream") == DOCX


@integration
def test_declared_type_never_overrides_content(docs: Path) -> None:
    pdf = df.make_pdf(docs / "x.txt", [["Heading", "Body."]])
    assert validate_upload(pdf, "x.txt", "text/plain") == PDF


@integration
def test_empty_file(docs: Path) -> None:
    empty = docs / "empty.pdf"
    empty.write_bytes(b"")
    with pytest.raises(InvalidDocument, match="empty"):
        validate_upload(empty, "empty.pdf", "application/pdf")


@integration
def test_binary_garbage(docs: Path) -> None:
    garbage = df.make_binary_garbage(docs / "garbage.pdf")
    with pytest.raises(UnsupportedFileType):
        validate_upload(garbage, "garbage.pdf", "application/pdf")


@integration
def test_corrupt_pdf(docs: Path) -> None:
    with pytest.raises(InvalidDocument, match="corrupt"):
        validate_upload(df.make_corrupt_pdf(docs / "c.pdf"), "c.pdf", None)


@integration
def test_truncated_pdf(docs: Path) -> None:
    source = df.make_pdf(docs / "full.pdf", [["H", "para " * 200]] * 4)
    truncated = df.make_truncated_pdf(docs / "t.pdf", source)
    with pytest.raises(InvalidDocument):
        validate_upload(truncated, "t.pdf", None)


@integration
def test_password_protected_pdf(docs: Path) -> None:
    with pytest.raises(InvalidDocument, match="password"):
        validate_upload(df.make_encrypted_pdf(docs / "e.pdf"), "e.pdf", None)


@integration
def test_restrictions_only_encrypted_pdf_is_accepted(docs: Path) -> None:
    path = df.make_encrypted_pdf(docs / "r.pdf", user_password="")
    assert validate_upload(path, "r.pdf", None) == PDF


@integration
def test_zero_page_pdf(docs: Path) -> None:
    with pytest.raises(InvalidDocument, match="no pages"):
        validate_upload(df.make_zero_page_pdf(docs / "z.pdf"), "z.pdf", None)


@integration
def test_zip_bomb_docx_by_ratio(docs: Path) -> None:
    bomb = df.make_zip_bomb_docx(docs / "bomb.docx", uncompressed_mb=200)
    assert bomb.stat().st_size < 2 * 1024 * 1024  # small on disk ...
    with pytest.raises(InvalidDocument, match="decompression bomb"):  # ... huge inflated
        validate_upload(bomb, "bomb.docx", DOCX)


@integration
def test_zip_total_uncompressed_limit(docs: Path) -> None:
    docx = df.make_docx(docs / "normal.docx", [("T", ["x"])])
    assert validate_upload(docx, "normal.docx", None) == DOCX
    with pytest.raises(InvalidDocument, match="expands to more than"):
        validate_upload(docx, "normal.docx", None, max_uncompressed_bytes=10_000)


@integration
def test_corrupt_docx(docs: Path) -> None:
    with pytest.raises(InvalidDocument, match="corrupt"):
        validate_upload(df.make_corrupt_docx(docs / "c.docx"), "c.docx", None)


@integration
def test_docx_without_document_part(docs: Path) -> None:
    path = df.make_docx_missing_document_part(docs / "m.docx")
    with pytest.raises(InvalidDocument, match=r"word/document\.xml"):
        validate_upload(path, "m.docx", None)


@integration
def test_plain_zip_file(docs: Path) -> None:
    with pytest.raises(UnsupportedFileType, match="zip archive"):
        validate_upload(df.make_plain_zip(docs / "a.zip"), "a.zip", "application/zip")


@integration
def test_invalid_utf8_after_the_sniffed_head(docs: Path) -> None:
    path = docs / "late.txt"
    path.write_bytes(b"fine text " * 2000 + bytes(range(0x80, 0xA0)) * 40)
    with pytest.raises(InvalidDocument, match="UTF-8"):
        validate_upload(path, "late.txt", None)


@integration
def test_latin1_file_validates(docs: Path) -> None:
    path = df.make_txt(docs / "l.txt", ["Crème brûlée à volonté."], encoding="latin-1")
    assert validate_upload(path, "l.txt", None) == PLAIN


@integration
def test_validation_does_not_import_unstructured() -> None:
    code = (
        "import sys, perimeter.ingest.validation as v; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'unstructured', 'spacy', 'torch', 'pypdf'}); print(bad); assert not bad, bad"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
