"""Pure parts of OCR: reading order, paragraphs and headings from boxes, re-spacing run-on lines,
and scanned pages as chunk boundaries carrying their OCR confidence."""

from __future__ import annotations

import pytest

from perimeter.backends.ocr import blocks, reading_order, respace
from perimeter.domain import OcrLine, OcrPage, ParsedElement, mean_ocr_confidence
from perimeter.ingest.chunking import chunk_elements, whitespace_token_count

pytestmark = pytest.mark.unit


def _line(text: str, x: float, y: float, h: float = 30, conf: float = 0.9) -> OcrLine:
    return OcrLine(text, conf, (x, y, x + 20 * len(text), y + h))


def test_reading_order_is_rows_top_down_then_left_to_right() -> None:
    # A form: label and value on one row, emitted by the detector column by column.
    lines = [
        _line("Name:", 100, 100),
        _line("Date:", 100, 160),
        _line("Maria Keller", 400, 103),
        _line("3 May 2024", 400, 158),
    ]
    ordered = [x.text for x in reading_order(lines)]
    assert ordered == ["Name:", "Maria Keller", "Date:", "3 May 2024"]


def test_blocks_split_at_gaps_and_tell_headings_by_height() -> None:
    page = OcrPage(
        lines=reading_order(
            [
                _line("Discharge summary", 100, 50, h=60),
                _line("The patient was admitted on", 100, 150),
                _line("Monday with chest pain.", 100, 190),
                _line("Follow-up in two weeks.", 100, 300, conf=0.5),
            ]
        ),
        width=1000,
        height=1000,
    )
    found = blocks(page)
    assert [(b.large, b.text) for b in found] == [
        (True, "Discharge summary"),
        (False, "The patient was admitted on\nMonday with chest pain."),
        (False, "Follow-up in two weeks."),
    ]
    assert found[2].confidence == pytest.approx(0.5)
    assert page.confidence is not None and 0.5 < page.confidence < 0.9


RESPACED = [
    (
        "Invoice4471wasissuedtoHarborClinicon3May2024.",
        "Invoice 4471 was issued to Harbor Clinic on 3 May 2024.",
    ),
    (
        "Patient 2231:blood pressure 120/80,stable.",
        "Patient 2231: blood pressure 120/80, stable.",
    ),
    (
        "Theamountroseto4.2millioneuros.Thenitfell.",
        "The amount rose to 4.2 million euros. Then it fell.",
    ),
    ("Medication: atorvastatin.Then rest.", "Medication: atorvastatin. Then rest."),
    (
        "Admitted on3 May with atorvastatin20 mg; the patientwas stable.",
        "Admitted on 3 May with atorvastatin 20 mg; the patient was stable.",
    ),
    # Normal lines keep their names, codes, numbers, abbreviations and long rare words.
    (
        "ischaemia mmHg Kellermann Northwind pharmacokinetics cardiomyopathy",
        "ischaemia mmHg Kellermann Northwind pharmacokinetics cardiomyopathy",
    ),
    (
        "Northwind Kellermann COVID19 B12 2nd 10am A4",
        "Northwind Kellermann COVID19 B12 2nd 10am A4",
    ),
    (
        "Pay 1,250.00 at 12:30, e.g. by card (U.S. only).",
        "Pay 1,250.00 at 12:30, e.g. by card (U.S. only).",
    ),
]


@pytest.mark.parametrize(("line", "expected"), RESPACED)
def test_respace(line: str, expected: str) -> None:
    assert respace(line) == expected


def test_a_scanned_page_starts_its_own_chunk() -> None:
    elements = [
        ParsedElement("Cover sheet text.", "NarrativeText", page=1),
        ParsedElement("Scanned claim form text.", "NarrativeText", page=2, ocr_confidence=0.97),
        ParsedElement("More of the scan.", "NarrativeText", page=2, ocr_confidence=0.95),
        ParsedElement("Back to a text page.", "NarrativeText", page=3),
        ParsedElement("Same text page.", "NarrativeText", page=3),
        ParsedElement("Text on the next page joins it.", "NarrativeText", page=4),
    ]
    chunks = chunk_elements(elements, whitespace_token_count, max_tokens=200, overlap_tokens=10)
    assert [(c.page, c.text) for c in chunks] == [
        (1, "Cover sheet text."),
        (2, "Scanned claim form text.\nMore of the scan."),
        (3, "Back to a text page.\nSame text page.\nText on the next page joins it."),
    ]
    # The scanned page's chunk carries its OCR confidence, weighted by characters: the long
    # line read at 0.97 counts for more than the short one at 0.95.
    long, short = len("Scanned claim form text."), len("More of the scan.")
    expected = round((0.97 * long + 0.95 * short) / (long + short), 4)
    assert [c.ocr_confidence for c in chunks] == [None, expected, None]


def test_ocr_confidence_of_split_and_overlapping_chunks() -> None:
    """A scanned paragraph cut into several chunks: each carries the confidence of its own new
    text (the overlap in front is the previous chunk's); an OCR'd heading counts as text read."""
    body = " ".join(f"Sentence number {i} of the scan." for i in range(30))
    elements = [
        ParsedElement("Claim Form", "Title", page=1, ocr_confidence=0.5),
        ParsedElement(body, "NarrativeText", page=1, ocr_confidence=0.9),
    ]
    chunks = chunk_elements(elements, whitespace_token_count, max_tokens=40, overlap_tokens=8)
    assert len(chunks) >= 3
    assert chunks[0].text.startswith("Claim Form\n")
    heading, text = len("Claim Form"), len(chunks[0].text) - len("Claim Form\n")
    assert chunks[0].ocr_confidence == round((0.5 * heading + 0.9 * text) / (heading + text), 4)
    assert all(c.ocr_confidence == 0.9 for c in chunks[1:])


def test_mean_ocr_confidence() -> None:
    assert mean_ocr_confidence([]) is None
    assert mean_ocr_confidence([("typed text", None)]) is None
    assert mean_ocr_confidence([("abc", 0.6), ("typed", None), ("abcdefg", 0.9)]) == 0.81
