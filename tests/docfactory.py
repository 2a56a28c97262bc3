"""Generate real documents for tests, so no binary fixtures live in the repository.

Every ``make_*`` writes one file at ``path`` and returns ``path``. The generators use the same
libraries real producers do (reportlab, python-docx, python-pptx, openpyxl, pypdf), so parsing
them exercises the real parser code paths.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path


def make_pdf(path: Path, pages: Sequence[Sequence[str]], heading_first: bool = True) -> Path:
    """One PDF page per entry of ``pages``; each entry is a list of paragraphs. With
    ``heading_first`` the first paragraph of each page is set as a heading (bold, larger)."""
    from reportlab.lib.pagesizes import letter
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.platypus import PageBreak, Paragraph, SimpleDocTemplate

    styles = getSampleStyleSheet()
    story: list[object] = []
    for page_number, paragraphs in enumerate(pages):
        if page_number:
            story.append(PageBreak())
        for i, text in enumerate(paragraphs):
            style = styles["Heading1"] if heading_first and i == 0 else styles["BodyText"]
            story.append(Paragraph(text, style))
    # invariant=1 fixes the creation date and document id, so the same input gives the same
    # bytes (content hashes in tests stay stable).
    doc = SimpleDocTemplate(str(path), pagesize=letter, invariant=1)
    doc.build(story)
    return path


def make_image_only_pdf(path: Path) -> Path:
    """A valid one-page PDF with a drawing and no text layer (what a scan looks like)."""
    from reportlab.lib.pagesizes import letter
    from reportlab.pdfgen import canvas

    c = canvas.Canvas(str(path), pagesize=letter, invariant=1)
    c.rect(100, 100, 300, 300, fill=1)
    c.showPage()
    c.save()
    return path


def make_docx(path: Path, sections: Sequence[tuple[str, Sequence[str]]]) -> Path:
    """Each section is (heading, paragraphs); headings use the built-in "Heading 1" style."""
    import docx

    document = docx.Document()
    for heading, paragraphs in sections:
        document.add_heading(heading, level=1)
        for text in paragraphs:
            document.add_paragraph(text)
    document.save(str(path))
    return path


def make_pptx(path: Path, slides: Sequence[tuple[str, Sequence[str]]]) -> Path:
    """Each slide is (title, bullet lines) on the "Title and Content" layout."""
    from pptx import Presentation

    presentation = Presentation()
    layout = presentation.slide_layouts[1]
    for title, bullets in slides:
        slide = presentation.slides.add_slide(layout)
        slide.shapes.title.text = title
        body = slide.placeholders[1].text_frame
        for i, line in enumerate(bullets):
            paragraph = body.paragraphs[0] if i == 0 else body.add_paragraph()
            paragraph.text = line
    presentation.save(str(path))
    return path


def make_xlsx(path: Path, sheets: dict[str, Sequence[Sequence[object]]]) -> Path:
    """One worksheet per key; each value is a list of rows (the first row a header)."""
    from openpyxl import Workbook

    workbook = Workbook()
    first = True
    for name, rows in sheets.items():
        sheet = workbook.active if first else workbook.create_sheet()
        assert sheet is not None
        sheet.title = name
        first = False
        for row in rows:
            sheet.append(list(row))
    workbook.save(str(path))
    return path


def make_html(path: Path, title: str, sections: Sequence[tuple[str, Sequence[str]]]) -> Path:
    body = "".join(
        f"<h2>{heading}</h2>" + "".join(f"<p>{p}</p>" for p in paragraphs)
        for heading, paragraphs in sections
    )
    path.write_text(
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title></head>"
        f"<body><h1>{title}</h1>{body}</body></html>",
        encoding="utf-8",
    )
    return path


def make_md(path: Path, title: str, sections: Sequence[tuple[str, Sequence[str]]]) -> Path:
    parts = [f"# {title}", ""]
    for heading, paragraphs in sections:
        parts += [f"## {heading}", ""]
        for paragraph in paragraphs:
            parts += [paragraph, ""]
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def make_txt(path: Path, paragraphs: Sequence[str], encoding: str = "utf-8") -> Path:
    path.write_bytes("\n\n".join(paragraphs).encode(encoding) + b"\n")
    return path


def make_csv(path: Path, rows: Sequence[Sequence[object]]) -> Path:
    import csv

    with path.open("w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return path


def make_eml(
    path: Path,
    subject: str,
    body: str,
    sender: str = "alice@example.org",
    to: str = "bob@example.org",
    html: str | None = None,
) -> Path:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime(2024, 5, 6, 9, 30, tzinfo=UTC))
    message["Message-ID"] = "<test-1@example.org>"
    message.set_content(body)
    if html is not None:
        message.add_alternative(html, subtype="html")
    path.write_bytes(bytes(message))
    return path


# -- hostile files ---------------------------------------------------------------------------


def make_corrupt_pdf(path: Path) -> Path:
    """Starts like a PDF, is not one: a header, then garbage, no xref, no trailer."""
    path.write_bytes(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n" + bytes(range(256)) * 8 + b"\n%%EOF\n")
    return path


def make_truncated_pdf(path: Path, source: Path) -> Path:
    """The first third of a real PDF: the page tree and trailer are cut off."""
    data = source.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return path


def make_encrypted_pdf(
    path: Path, user_password: str = "secret", owner_password: str = "owner"
) -> Path:
    """A text PDF encrypted with pypdf. An empty ``user_password`` gives the common
    "restrictions only" PDF that opens without a password."""
    from pypdf import PdfReader, PdfWriter

    plain = make_pdf(path.with_suffix(".plain.pdf"), [["Secret plans", "The vault code is 1234."]])
    writer = PdfWriter()
    for page in PdfReader(plain).pages:
        writer.add_page(page)
    writer.encrypt(user_password=user_password, owner_password=owner_password, algorithm="RC4-128")
    with path.open("wb") as fh:
        writer.write(fh)
    plain.unlink()
    return path


def make_zero_page_pdf(path: Path) -> Path:
    from pypdf import PdfWriter

    with path.open("wb") as fh:
        PdfWriter().write(fh)
    return path


def make_zip_bomb_docx(path: Path, uncompressed_mb: int = 200) -> Path:
    """A structurally complete .docx with an extra member of ``uncompressed_mb`` MiB of zeros.
    Deflate squeezes zeros about 1000:1, so the file on disk stays a few hundred KiB; it is
    written in blocks so the test never holds the expanded member in memory."""
    make_docx(path, [("Harmless", ["Nothing to see."])])
    block = b"\x00" * (1024 * 1024)
    with (
        zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as archive,
        archive.open("word/media/padding.bin", "w", force_zip64=True) as member,
    ):
        for _ in range(uncompressed_mb):
            member.write(block)
    return path


def make_corrupt_docx(path: Path) -> Path:
    """Zip magic, then garbage: not a readable package."""
    path.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 16)
    return path


def make_docx_missing_document_part(path: Path) -> Path:
    """A valid zip with Office content types but no word/document.xml."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/styles.xml", "<styles/>")
    return path


def make_plain_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "just some notes")
    return path


def make_binary_garbage(path: Path, size: int = 4096, seed: int = 1234) -> Path:
    """Deterministic pseudo-random bytes (a seeded generator, so failures are reproducible)."""
    import random

    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def pdf_from_objects(objs: list[bytes]) -> bytes:
    """A PDF file of hand-written objects (numbered from 1, object 1 the catalog), with a
    correct cross-reference table: for inputs no PDF library would write."""
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, obj in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return bytes(out)
