"""Through the real stack (API, Celery worker, local Qdrant, MiniLM): tables from XLSX, DOCX,
PPTX, HTML, CSV and PDF are chunked with their header row and caption, so a question about one cell
retrieves the chunk holding the header and the row; scanned PDFs and images are OCR'd, indexed
and retrieved with their page; broken images are refused with a 4xx and leave nothing behind."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest

from perimeter.domain import ScoredChunk, SearchFilter
from tests import docfactory as df
from tests import scans
from tests.conftest import Stack
from tests.integration.test_documents_api import leftovers, upload

pytestmark = pytest.mark.integration

YEARS = ["Metric", "2021", "2022", "2023"]
# A real-looking income statement: 30 lines, so the sheet spans several chunks.
INCOME = [
    YEARS,
    ["Net interest income", "4,112", "4,530", "5,287"],
    ["Fee and commission income", "1,944", "2,015", "2,178"],
    ["Trading result", "312", "-48", "406"],
    ["Operating expenses", "-3,601", "-3,712", "-3,844"],
    ["Loan loss provisions", "-420", "-610", "-388"],
    *[[f"Other item {i}", f"{i}1", f"{i}2", f"{i}3"] for i in range(1, 26)],
]


def _top(stack: Stack, question: str, document_id: str, k: int = 3) -> list[ScoredChunk]:
    result = stack.services.retriever.retrieve(
        question, SearchFilter(tenant_id="default", document_ids=[document_id]), top_k=k
    )
    return result.chunks


def _docx_with_table(path: Path) -> Path:
    from docx import Document

    doc = Document()
    doc.add_heading("Annual report", level=1)
    doc.add_paragraph("The bank grew its loan book in every region.")
    doc.add_paragraph("Table 2: Loan portfolio by region (EUR m)")
    rows = [
        ["Region", "2022", "2023"],
        ["North", "12,400", "13,150"],
        ["South", "9,870", "10,420"],
        ["Alpine", "3,310", "3,905"],
    ]
    table = doc.add_table(rows=len(rows), cols=3)
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    doc.add_paragraph("Risk costs fell in the second half.")
    doc.save(str(path))
    return path


def _pptx_with_table(path: Path) -> Path:
    from pptx import Presentation
    from pptx.util import Inches

    prs = Presentation()
    slide = prs.slides.add_slide(prs.slide_layouts[5])
    slide.shapes.title.text = "Ward occupancy"
    rows = [["Ward", "Beds", "Occupied"], ["Cardiology", "42", "39"], ["Oncology", "36", "31"]]
    shape = slide.shapes.add_table(3, 3, Inches(1), Inches(2), Inches(6), Inches(2))
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            shape.table.cell(r, c).text = value
    prs.save(str(path))
    return path


def _html_with_table(path: Path) -> Path:
    rows = "".join(
        f"<tr><td>{name}</td><td>{rate}</td><td>{fee}</td></tr>"
        for name, rate, fee in [
            ("Basic account", "0.00%", "4.90"),
            ("Savings plus", "2.10%", "0.00"),
            ("Business", "0.50%", "19.00"),
        ]
    )
    path.write_text(
        "<!doctype html><html><body><h1>Price list</h1><p>Valid from January.</p>"
        "<h2>Accounts</h2><table><tr><th>Product</th><th>Interest</th><th>Monthly fee</th></tr>"
        f"{rows}</table></body></html>",
        encoding="utf-8",
    )
    return path


def _pdf_with_table(path: Path) -> Path:
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Table, TableStyle

    styles = getSampleStyleSheet()
    table = Table(INCOME[:6])
    table.setStyle(
        TableStyle(
            [("GRID", (0, 0), (-1, -1), 0.5, colors.black), ("ALIGN", (1, 0), (-1, -1), "RIGHT")]
        )
    )
    SimpleDocTemplate(str(path), pagesize=A4).build(
        [
            Paragraph("Annual results", styles["Heading1"]),
            Paragraph("Income rose in all business lines; costs were kept flat.", styles["Normal"]),
            Paragraph("Table 1: Income statement (EUR m)", styles["Normal"]),
            table,
            Paragraph("The board proposes a dividend of 1.10 EUR per share.", styles["Normal"]),
        ]
    )
    return path


def _assert_header_and_row(chunk: ScoredChunk, header: str, row: str) -> None:
    lines = chunk.text.split("\n")
    assert any(line.startswith(header) for line in lines[:3]), chunk.text
    assert row in lines, chunk.text


def test_a_question_about_a_cell_finds_header_and_row(stack: Stack, tmp_path: Path) -> None:
    xlsx = df.make_xlsx(
        tmp_path / "financials.xlsx",
        {"Income statement": INCOME, "Headcount": [["Unit", "FTE"], ["Retail", "1,204"]]},
    )
    csv = df.make_csv(
        tmp_path / "branches.csv",
        [
            ["Branch", "City", "Manager"],
            ["B-17", "Graz", "Petra Huber"],
            ["B-22", "Linz", "Jan Novak"],
        ],
    )
    docs = upload(
        stack,
        xlsx,
        _docx_with_table(tmp_path / "report.docx"),
        _pptx_with_table(tmp_path / "wards.pptx"),
        _html_with_table(tmp_path / "prices.html"),
        csv,
        _pdf_with_table(tmp_path / "results.pdf"),
    ).json()["documents"]
    ids = [d["document_id"] for d in docs]
    final = stack.wait_indexed(ids)
    assert all(final[i]["status"] == "indexed" for i in ids), final
    xlsx_id, docx_id, pptx_id, html_id, csv_id, pdf_id = ids

    # The sheet is long: several chunks, each led by the sheet name and the header row.
    sheet_chunks = [
        c for c in _top(stack, "Other item", xlsx_id, k=20) if c.section == "Income statement"
    ]
    assert len(sheet_chunks) >= 2
    for chunk in sheet_chunks:
        assert chunk.text.startswith("Table: Income statement\nMetric | 2021 | 2022 | 2023\n")

    cases = [
        (xlsx_id, "What was the 2023 value for net interest income?", "Metric | 2021",
         "Net interest income | 4,112 | 4,530 | 5,287"),
        (docx_id, "What was the loan portfolio of the Alpine region in 2023?", "Region | 2022",
         "Alpine | 3,310 | 3,905"),
        (pptx_id, "How many beds does the oncology ward have?", "Ward | Beds",
         "Oncology | 36 | 31"),
        (html_id, "What is the monthly fee of the Business account?", "Product | Interest",
         "Business | 0.50% | 19.00"),
        (csv_id, "Who manages branch B-22?", "Branch | City", "B-22 | Linz | Jan Novak"),
        (pdf_id, "What were the operating expenses in 2022?", "Metric | 2021",
         "Operating expenses | -3,601 | -3,712 | -3,844"),
    ]  # fmt: skip
    for doc_id, question, header, row in cases:
        best = _top(stack, question, doc_id)[0]
        _assert_header_and_row(best, header, row)
    docx_best = _top(stack, cases[1][1], docx_id)[0]
    assert docx_best.section == "Table 2: Loan portfolio by region (EUR m)"
    assert "Table: Table 2: Loan portfolio by region (EUR m)" in docx_best.text
    pdf_best = _top(stack, cases[5][1], pdf_id)[0]
    assert pdf_best.page == 1 and pdf_best.section == "Table 1: Income statement (EUR m)"


def test_scans_are_indexed_with_their_pages(stack: Stack, tmp_path: Path) -> None:
    strip = (8.27, 3.0)
    mixed = tmp_path / "claim.pdf"
    mixed.write_bytes(
        scans.mixed_pdf_bytes(
            [
                "Insurance claim cover sheet.\nThe scanned form follows on the next page.",
                scans.render_page(
                    ["Claim number 88213 concerns water damage in the basement.",
                     "The adjuster approved a payment of 6,400 euros."],
                    page_inches=strip, rotate_deg=0.5, noise=0.005,
                ),
            ]
        )
    )  # fmt: skip
    photo = tmp_path / "form.png"
    photo.write_bytes(
        scans.png_bytes(
            scans.render_page(
                ["Visitor badge 5531 was issued to Tomas Berger."],
                page_inches=strip, font="DejaVuSerif.ttf",
            )
        )
    )  # fmt: skip
    docs = upload(stack, mixed, photo).json()["documents"]
    ids = [d["document_id"] for d in docs]
    final = stack.wait_indexed(ids, timeout_s=240)
    assert all(final[i]["status"] == "indexed" for i in ids), final
    assert final[ids[0]]["pages"] == 2 and final[ids[1]]["pages"] == 1
    job = stack.client.get(f"/v1/jobs/{docs[0]['job_id']}").json()
    assert job["status"] == "succeeded" and job["progress"] == 1.0

    # The OCR confidence is on the document: which pages were read from images, how surely.
    assert final[ids[0]]["ocr_pages"] == [2] and final[ids[1]]["ocr_pages"] == [1]
    for doc_id in ids:
        assert 0.8 < final[doc_id]["ocr_confidence"] <= 1.0, final[doc_id]
    listed = {d["id"]: d for d in stack.client.get("/v1/documents").json()["documents"]}
    assert listed[ids[0]]["ocr_confidence"] == final[ids[0]]["ocr_confidence"]

    best = _top(stack, "How much did the adjuster approve for the water damage?", ids[0])[0]
    assert best.page == 2 and "6,400" in best.text
    # ... and on every chunk read from a scan, never on the text layer's chunks.
    assert best.ocr_confidence is not None and 0.8 < best.ocr_confidence <= 1.0
    cover = _top(stack, "Which page says the scanned form follows?", ids[0])[0]
    assert cover.page == 1 and cover.ocr_confidence is None
    badge = _top(stack, "Who got visitor badge 5531?", ids[1])[0]
    assert badge.page == 1 and "Tomas Berger" in badge.text
    assert badge.ocr_confidence is not None and 0.8 < badge.ocr_confidence <= 1.0

    # Citations say it too, next to the page (retrieval-only: no LLM in this stack).
    response = stack.client.post(
        "/v1/query",
        json={
            "question": "How much did the adjuster approve for the water damage?",
            "retrieval_only": True,
            "min_score": -1.0,  # both pages' chunks, the cover sheet too
            "filters": {"document_ids": [ids[0]]},
        },
    )
    assert response.status_code == 200, response.text
    by_page = {s["page"]: s for s in response.json()["sources"]}
    assert by_page[2]["ocr_confidence"] == best.ocr_confidence
    assert by_page[1]["ocr_confidence"] is None


def _png_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 512))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("name", "data", "needle"),
    [
        ("empty.png", b"", "empty"),
        ("broken.jpg", b"\xff\xd8\xff\xe0" + b"\x13" * 300, "corrupt|truncated|not a readable"),
        ("bomb.png", _png_claiming(60_000, 60_000), "decompression bomb"),
        ("banner.tif", None, "pixels"),
    ],
)
def test_bad_images_get_a_clear_4xx_and_leave_nothing(
    stack: Stack, tmp_path: Path, name: str, data: bytes | None, needle: str
) -> None:
    import re

    from PIL import Image

    path = tmp_path / name
    if data is None:
        Image.new("1", (25_000, 8)).save(path, "TIFF")
    else:
        path.write_bytes(data)
    response = upload(stack, path)
    assert 400 <= response.status_code < 500, response.text
    assert re.search(needle, response.json()["error"]["message"]), response.text
    assert leftovers(stack) == []
    assert stack.client.get("/v1/documents").json()["documents"] == []
