"""OCR of scans the tests render themselves: image-only and mixed PDFs, PNG/JPEG/multi-page TIFF,
with page numbers, confidences, per-page progress and the parser's OCR time limit."""

from __future__ import annotations

from pathlib import Path

import pytest

from perimeter.backends.ocr import RapidOcrEngine
from perimeter.backends.unstructured_parser import UnstructuredParser
from perimeter.errors import ParseError
from perimeter.ingest.validation import validate_upload
from perimeter.mime import JPEG, PDF, PNG, TIFF
from tests import scans

pytestmark = pytest.mark.integration

# Small pages (a quarter of A4) keep each OCR call to a second or two on two shared cores.
STRIP = (8.27, 3.0)

PAGE_ONE = [
    "Invoice 4471 was issued to Harbor Clinic on 3 May 2024.",
    "The amount due is 1,250.00 euros, payable within 30 days.",
]
PAGE_TWO = [
    "Patient consent form signed by Maria Keller.",
    "Allergies: penicillin. Blood type: A positive.",
]


@pytest.fixture(scope="module")
def engine() -> RapidOcrEngine:
    ocr = RapidOcrEngine(threads=2)
    ocr.warm_up()
    return ocr


@pytest.fixture(scope="module")
def parser(engine: RapidOcrEngine) -> UnstructuredParser:
    return UnstructuredParser(ocr=engine, ocr_dpi=200, ocr_time_limit_s=120)


def _page(lines: list[str], **kw: object) -> scans.Image.Image:
    return scans.render_page(lines, page_inches=STRIP, **kw)  # type: ignore[arg-type]


def _text_of(doc: object, page: int) -> str:
    return " ".join(e.text for e in doc.elements if e.page == page)  # type: ignore[attr-defined]


def test_image_only_pdf_is_read_page_by_page(parser: UnstructuredParser, tmp_path: Path) -> None:
    path = tmp_path / "scan.pdf"
    path.write_bytes(
        scans.image_pdf_bytes(
            [_page(PAGE_ONE, rotate_deg=0.7, noise=0.01), _page(PAGE_TWO, font="DejaVuSerif.ttf")]
        )
    )
    assert validate_upload(path, "scan.pdf", None) == PDF
    progress: list[tuple[int, int]] = []
    doc = parser.parse(path, PDF, "scan.pdf", on_page=lambda d, t: progress.append((d, t)))
    assert progress == [(1, 2), (2, 2)]
    assert doc.pages == 2 and doc.ocr_pages == (1, 2)
    assert doc.ocr_confidence is not None and 0.8 < doc.ocr_confidence <= 1.0
    assert all(e.ocr_confidence is not None for e in doc.elements)
    assert scans.character_error_rate(" ".join(PAGE_ONE), _text_of(doc, 1)) < 0.05
    assert scans.character_error_rate(" ".join(PAGE_TWO), _text_of(doc, 2)) < 0.05
    assert "1,250.00" in _text_of(doc, 1)
    assert "penicillin" in _text_of(doc, 2)


def test_mixed_pdf_ocrs_only_the_pages_without_text(
    parser: UnstructuredParser, tmp_path: Path
) -> None:
    path = tmp_path / "mixed.pdf"
    text_page = "Cover letter for the enclosed scanned invoice.\nPlease file it under accounts."
    path.write_bytes(scans.mixed_pdf_bytes([text_page, _page(PAGE_ONE), text_page]))
    progress: list[tuple[int, int]] = []
    doc = parser.parse(path, PDF, "mixed.pdf", on_page=lambda d, t: progress.append((d, t)))
    assert progress == [(1, 1)]  # one page needed OCR
    assert doc.ocr_pages == (2,)
    assert [e.page for e in doc.elements] == sorted(e.page or 0 for e in doc.elements)
    assert "Cover letter" in _text_of(doc, 1) and "Cover letter" in _text_of(doc, 3)
    assert all(e.ocr_confidence is None for e in doc.elements if e.page != 2)
    assert "Invoice 4471" in _text_of(doc, 2)


def test_large_text_on_a_scan_becomes_a_title(parser: UnstructuredParser, tmp_path: Path) -> None:
    path = tmp_path / "memo.png"
    path.write_bytes(scans.png_bytes(_page(PAGE_TWO, title="Consent Form")))
    doc = parser.parse(path, PNG, "memo.png")
    assert doc.elements[0].category == "Title"
    assert "Consent" in doc.elements[0].text
    assert "Maria Keller" in " ".join(e.text for e in doc.elements[1:])


def test_jpeg_and_multi_page_tiff(parser: UnstructuredParser, tmp_path: Path) -> None:
    jpeg = tmp_path / "photo.jpg"
    jpeg.write_bytes(scans.jpeg_bytes(_page(PAGE_ONE, noise=0.01)))
    assert validate_upload(jpeg, "photo.jpg", None) == JPEG
    assert "Harbor Clinic" in _text_of(parser.parse(jpeg, JPEG, "photo.jpg"), 1)

    tiff = tmp_path / "fax.tif"
    tiff.write_bytes(scans.tiff_bytes([_page(PAGE_ONE), _page(PAGE_TWO)]))
    assert validate_upload(tiff, "fax.tif", None) == TIFF
    doc = parser.parse(tiff, TIFF, "fax.tif")
    assert doc.pages == 2 and doc.ocr_pages == (1, 2)
    assert "Invoice 4471" in _text_of(doc, 1) and "Maria Keller" in _text_of(doc, 2)


def test_ocr_stops_at_the_time_limit(engine: RapidOcrEngine, tmp_path: Path) -> None:
    path = tmp_path / "long.pdf"
    path.write_bytes(scans.image_pdf_bytes([_page(PAGE_ONE)] * 3))
    # Rendering a page takes milliseconds, reading it a second or more on two cores: the limit
    # passes during the first page and the second is never started (on a much faster machine,
    # during the second).
    quick = UnstructuredParser(ocr=engine, ocr_time_limit_s=0.3)
    progress: list[int] = []
    with pytest.raises(ParseError, match=r"time limit \(0.3 s\) after [12] of 3 pages"):
        quick.parse(path, PDF, "long.pdf", on_page=lambda done, _total: progress.append(done))
    assert progress in ([1], [1, 2])


def test_blank_scan_and_ocr_off_are_parse_errors(
    parser: UnstructuredParser, tmp_path: Path
) -> None:
    blank = tmp_path / "blank.png"
    blank.write_bytes(scans.png_bytes(_page([])))
    with pytest.raises(ParseError, match="OCR found no text"):
        parser.parse(blank, PNG, "blank.png")
    scan = tmp_path / "scan.png"
    scan.write_bytes(scans.png_bytes(_page(PAGE_ONE)))
    with pytest.raises(ParseError, match="OCR_ENABLED"):
        UnstructuredParser(ocr=None).parse(scan, PNG, "scan.png")


def test_pdf_pages_render_at_their_scan_resolution(tmp_path: Path) -> None:
    """With match_scan (the parser's way) a scanned page is rendered at the resolution it was
    scanned at, up to the dpi asked for: the picture's own pixels, no resampling; a page
    without a full-page picture, or match_scan off, at the dpi asked for."""
    from perimeter.backends.ocr import pdf_page_images

    def sides(dpi: int) -> list[int]:
        return [round(side * dpi) for side in STRIP]

    def close(size: tuple[int, int], want: list[int]) -> bool:
        # pdfium rounds a rendered side up: a pixel more at most.
        return all(0 <= got - w <= 1 for got, w in zip(size, want, strict=True))

    for dpi in (150, 300):
        path = tmp_path / f"scan{dpi}.pdf"
        path.write_bytes(scans.image_pdf_bytes([_page(PAGE_ONE, dpi=dpi)], dpi))
        [(_, native)] = pdf_page_images(path, [1], 300, match_scan=True)
        assert close(native.size, sides(dpi)), (dpi, native.size)
        [(_, capped)] = pdf_page_images(path, [1], 200, match_scan=True)
        assert close(capped.size, sides(min(dpi, 200))), (dpi, capped.size)
        [(_, fixed)] = pdf_page_images(path, [1], 200)
        assert close(fixed.size, sides(200)), (dpi, fixed.size)
    mixed = tmp_path / "mixed.pdf"
    mixed.write_bytes(scans.mixed_pdf_bytes(["A typed page.", _page(PAGE_ONE)]))
    # The typed page has no picture; the strip covers a quarter of its A4 page, not a scan.
    sizes = [image.size for _, image in pdf_page_images(mixed, [1, 2], 100, match_scan=True)]
    a4 = (827, 1169)  # A4 at 100 dpi
    assert all(abs(g - w) <= 1 for size in sizes for g, w in zip(size, a4, strict=True)), sizes


def test_unknown_language_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="ru"):
        RapidOcrEngine(languages=["en", "ru"])


def test_doctor_finds_the_packaged_models(tmp_path: Path) -> None:
    from perimeter import doctor
    from perimeter.settings import Settings

    on = doctor._ocr_check(Settings(storage={"data_dir": tmp_path}))
    assert (on.status, on.value) == ("ok", "rapidocr")
    assert "3 ONNX models" in on.detail
    off = doctor._ocr_check(Settings(storage={"data_dir": tmp_path}, parser={"ocr_enabled": False}))
    assert (off.status, off.value) == ("ok", "off")
