"""Offline OCR: page images in, lines of text with confidences out.

The engine is RapidOCR (``rapidocr-onnxruntime``): PaddleOCR's PP-OCRv4 detection and
recognition networks exported to ONNX and shipped *inside the wheel* (about 15 MB), run by ONNX
Runtime on the CPU. Nothing is downloaded at run time; the model files are read from the
installed package. The shipped recognition model is PaddleOCR's "ch" model, which reads Latin
script (English and the other Western European languages' letters, digits, punctuation) and
Chinese; other scripts need another engine behind the same ``OcrEngine`` protocol (Tesseract
with its OS language packs, for instance).

What we chose, and why (measured on rendered pages, see bench/ocr_cer.py):

* The 180-degree direction classifier is off by default: on upright scans it flipped nothing
  right and cost lines (on a 1-degree-rotated test page it made two of 18 lines vanish); scans
  are upright far more often than upside down.
* Threads: ONNX Runtime's default is one per core for *each* of the three sessions; a worker
  shares its cores with the embedder, so the count is a setting.
* Resolution: a scanned PDF page is rendered at its scan's own resolution (up to the
  ``ocr_dpi`` setting, 300) and read at it: RapidOCR's own 2000-pixel cap read every A4 page at
  171 dpi, which kept image-only PDFs at 2.2 % CER (1.6 % now; ``render_dpi``, ``max_side_for``).

Also here: the two ways a page image comes to exist (a PDF page rendered by pdfium, or a frame of
an uploaded PNG/JPEG/TIFF) and the reading-order layout of recognised lines into paragraphs.
Nothing runs or loads at import time.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import TYPE_CHECKING, Any

from perimeter.domain import OcrLine, OcrPage, ParsedElement
from perimeter.errors import ParseError

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

    from perimeter.backends.protocols import OcrEngine

# Languages the shipped recognition model reads (ISO 639-1 codes, plus "ch" as RapidOCR names
# its model). Latin-script languages share one alphabet in it.
RAPIDOCR_LANGUAGES = frozenset({"en", "de", "fr", "es", "it", "nl", "pt", "ch", "zh"})

# Below this many pixels on the short side there is nothing a detector can read.
MIN_IMAGE_SIDE = 16

# The highest resolution OCR reads a page at (PERIMETER_PARSER__OCR_DPI): scanned PDF pages are
# rendered at their scan's own resolution up to it (``render_dpi``), and OCR reads them without
# scaling them down (``max_side_for``). On the bench's image-only PDFs (bench/ocr_cer.py) this
# read with 1.6 % CER where rendering at 200 and RapidOCR's own 2000-pixel cap read with 2.2 %.
DEFAULT_OCR_DPI = 300
# The long side of an A4 page (11.69 in; US Letter is 11 in).
PAGE_LONG_SIDE_INCHES = 11.7


def max_side_for(dpi: int) -> int:
    """The longest page image OCR reads as it is, for pages rendered at ``dpi``: an A4 or
    Letter page at that resolution. RapidOCR scales a larger image down to this before reading
    (its own default, 2000 pixels, would read an A4 page at 171 dpi whatever it was rendered
    at); larger pages and photos are read at an A4 page's pixel budget."""
    return math.ceil(dpi * PAGE_LONG_SIDE_INCHES)


class RapidOcrEngine:
    """``OcrEngine`` over RapidOCR's packaged ONNX models. Cheap to construct; the three ONNX
    sessions are created on first use (or ``warm_up``) and shared by all threads: RapidOCR holds
    no per-call state on them, and a lock keeps ONNX Runtime from being entered twice at once
    (two concurrent calls would only fight over the same cores)."""

    def __init__(
        self,
        languages: Sequence[str] = ("en",),
        threads: int = 2,
        min_confidence: float = 0.5,
        use_direction_classifier: bool = False,
        max_side: int = max_side_for(DEFAULT_OCR_DPI),
    ) -> None:
        """``max_side``: a page image whose longer side has more pixels is scaled down to it
        before detection and recognition (``max_side_for``)."""
        unknown = sorted(set(languages) - RAPIDOCR_LANGUAGES)
        if unknown:
            raise ValueError(
                f"OCR languages {unknown} are not read by the packaged RapidOCR model "
                f"(it reads {sorted(RAPIDOCR_LANGUAGES)})"
            )
        if threads < 1:
            raise ValueError("OCR threads must be at least 1")
        self.languages = tuple(languages)
        self.threads = threads
        self.min_confidence = min_confidence
        self.use_direction_classifier = use_direction_classifier
        self.max_side = max_side
        # Re-spacing run-on lines uses an English word list: only where English is expected.
        self.respace_english = "en" in self.languages
        self._engine: Any = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return "rapidocr"

    def _load(self) -> Any:
        if self._engine is None:
            from rapidocr_onnxruntime import RapidOCR

            self._engine = RapidOCR(
                intra_op_num_threads=self.threads,
                inter_op_num_threads=1,
                text_score=self.min_confidence,
                use_cls=self.use_direction_classifier,
                max_side_len=self.max_side,
                print_verbose=False,
            )
        return self._engine

    def warm_up(self) -> None:
        with self._lock:
            self._load()

    def recognize(self, image: PILImage) -> OcrPage:
        import numpy as np

        width, height = image.size
        if min(width, height) < MIN_IMAGE_SIDE:
            return OcrPage(lines=[], width=width, height=height)
        rgb = np.asarray(image.convert("RGB"))
        with self._lock:
            result, _elapsed = self._load()(rgb)
        lines: list[OcrLine] = []
        for points, text, score in result or []:
            text = " ".join(str(text).split())
            if not text:
                continue
            if self.respace_english:
                text = respace(text)
            lines.append(OcrLine(text, float(score), _deskewed_box(points)))
        return OcrPage(lines=reading_order(lines), width=width, height=height)


# -- spaces ---------------------------------------------------------------------------------------

# The packaged recognition model sometimes drops every space of a line ("Invoice4471wasissued
# to...": seen on about one line in ten of noisy, slightly rotated test scans; a known weakness
# of PaddleOCR's "ch" model on Latin text). Such a line is unmistakable, its tokens are far
# longer than words, and English text in it is put back into words with wordninja (a unigram
# model of English Wikipedia, shipped in its wheel). Lines that look normal are never touched,
# so names and codes in them are safe.
_RUN_ON_MEAN_TOKEN = 9.0
# Inside a run-on line, runs of letters this long that are no English word are split. In a
# normal line none are: long rare words there are real ("atorvastatin" would become "ator vast
# at in"), so only glued numbers and punctuation are separated.
_MIN_SPLIT_RUN_ON = 6
_MIN_MEAN_SPLIT_WORD = 3.0
_ALNUM_RUN = re.compile(r"[A-Za-z0-9]+|[^A-Za-z0-9]+")
_DIGITS_OR_LETTERS = re.compile(r"[0-9]+|[A-Za-z]+")
# ",word" / ":word" / ";word" / ".Word": punctuation glued to the next word. Never between
# digits ("1,250.00", "12:30") and never inside abbreviations ("e.g.", "U.S.").
_GLUED_PUNCT = re.compile(r"(?<=[A-Za-z0-9][,;:])(?=[A-Za-z])|(?<=[a-z]{2}[.!?])(?=[A-Z][a-z])")


def _known(word: str, costs: dict[str, float]) -> bool:
    return word.lower() in costs and (len(word) > 1 or word in "aAI")


# Short words that stand next to numbers ("on 3 May", "in 2024", "by 10").
_NUMBER_NEIGHBOURS = frozenset({"on", "in", "at", "to", "of", "by", "is", "or", "as"})
# A word this long glued to a number is a lost space even when the word list lacks it
# ("atorvastatin20"); shorter ones may be codes ("mp3", "B12").
_LONG_WORD = 6


def _glued_to_number(letters: str, costs: dict[str, float]) -> bool:
    if not (letters.islower() or letters.istitle()):
        return False  # "COVID19", "DE44": codes
    if len(letters) >= _LONG_WORD:
        return True
    if len(letters) >= 3:
        return _known(letters, costs)
    return letters.lower() in _NUMBER_NEIGHBOURS


def _normal_line_split(run: str, costs: dict[str, float], model: Any) -> str:
    """Two or three common words run together in an otherwise normal line ("patientwas"):
    only lower-case runs (capitalised ones are names), only into a few words of three or more
    letters on average, every one of them known."""
    if len(run) < _LONG_WORD + 1 or not run.islower() or run in costs:
        return run
    parts = model.split(run)
    if (
        2 <= len(parts) <= 3
        and len(run) / len(parts) >= 3.5
        and all(len(p) >= 2 and p in costs for p in parts)
    ):
        return " ".join(parts)
    return run


def _split_words(run: str, costs: dict[str, float], model: Any, may_segment: bool) -> str:
    """A run of letters and digits as words, or unchanged when it is not clearly several."""
    if may_segment:
        parts: list[str] = []
        for part in model.split(run):
            # wordninja prefers frequent short words ("In voice"); a lower-case continuation
            # that makes a known word with the part before is one word.
            merged = parts[-1] + part if parts else ""
            if parts and part[:1].islower() and len(merged) >= 5 and merged.lower() in costs:
                parts[-1] = merged
            else:
                parts.append(part)
        # Many tiny words are a rare word chopped up ("at or vast at in"), not a run-on.
        plausible = len(run) / max(len(parts), 1) >= _MIN_MEAN_SPLIT_WORD
        if len(parts) > 1 and plausible and all(p.isdigit() or _known(p, costs) for p in parts):
            return " ".join(parts)
    groups = _DIGITS_OR_LETTERS.findall(run)
    if len(groups) > 1 and all(g.isdigit() or _glued_to_number(g, costs) for g in groups):
        return " ".join(groups)  # "4471was", "3May2024", "on3"; not "B12", "COVID19", "2nd"
    return run


def respace(line: str) -> str:
    """``line`` with the spaces the recognizer dropped put back (see above); lines that look
    normal only get the space after glued punctuation and between glued numbers and words."""
    tokens = line.split()
    if not tokens:
        return line
    import wordninja

    model = wordninja.DEFAULT_LANGUAGE_MODEL
    costs: dict[str, float] = model._wordcost
    # Run-on: tokens far longer than words, and mostly no words at all (a line of long but real
    # terms, "hypertension cardiomyopathy", is not one).
    unknown = sum(1 for t in tokens if re.sub(r"[^a-z]", "", t.lower()) not in costs)
    run_on = sum(map(len, tokens)) / len(tokens) > _RUN_ON_MEAN_TOKEN and unknown > len(tokens) / 2
    out: list[str] = []
    for token in tokens:
        pieces: list[str] = []
        for run in _ALNUM_RUN.findall(token):
            mixed = any(c.isdigit() for c in run) and any(c.isalpha() for c in run)
            long_unknown = run_on and len(run) >= _MIN_SPLIT_RUN_ON and run.lower() not in costs
            if run[0].isalnum() and (mixed or long_unknown):
                pieces.append(_split_words(run, costs, model, long_unknown))
            elif run.isalpha() and not run_on:
                pieces.append(_normal_line_split(run, costs, model))
            else:
                pieces.append(run)
        out.append(_GLUED_PUNCT.sub(" ", "".join(pieces)))
    return " ".join(out)


# -- layout ---------------------------------------------------------------------------------------


def _deskewed_box(points: Sequence[Sequence[float]]) -> tuple[float, float, float, float]:
    """The axis-aligned box of a detected quadrilateral (corners clockwise from top-left), but
    as tall as the text line itself rather than its bounding box: on a page rotated by a degree
    a long line's bounding box is twice its text height, which would hide headings (told by
    height) and merge rows."""
    (x0, y0), (x1, y1), (x2, y2), (x3, y3) = ((float(p[0]), float(p[1])) for p in points[:4])
    height = (math.hypot(x3 - x0, y3 - y0) + math.hypot(x2 - x1, y2 - y1)) / 2
    center = (y0 + y1 + y2 + y3) / 4
    return (min(x0, x3), center - height / 2, max(x1, x2), center + height / 2)


def _height(line: OcrLine) -> float:
    return max(1.0, line.box[3] - line.box[1])


def _center_y(line: OcrLine) -> float:
    return (line.box[1] + line.box[3]) / 2


def reading_order(lines: Sequence[OcrLine]) -> list[OcrLine]:
    """Detected boxes top to bottom, and left to right within a visual row. A box is on the row
    of the one before when its vertical centre lies within half a line height of the row's; the
    detector returns boxes roughly in this order already, but not for multi-column rows (form
    fields, table cells), which it may emit column by column."""
    if not lines:
        return []
    ordered = sorted(lines, key=_center_y)
    rows: list[list[OcrLine]] = [[ordered[0]]]
    for line in ordered[1:]:
        row = rows[-1]
        row_center = sum(_center_y(x) for x in row) / len(row)
        row_height = median(_height(x) for x in row)
        if abs(_center_y(line) - row_center) <= row_height / 2:
            row.append(line)
        else:
            rows.append([line])
    return [line for row in rows for line in sorted(row, key=lambda x: x.box[0])]


@dataclass(frozen=True, slots=True)
class OcrBlock:
    """A paragraph of a recognised page: its rows joined, whether it is set large (a heading),
    and its character-weighted confidence."""

    text: str
    large: bool
    confidence: float


# Rows set this much taller than the page's body rows are headings (as for PDF fonts).
_HEADING_HEIGHT_RATIO = 1.3
# A vertical gap above a row larger than this share of the body row height starts a paragraph.
_PARAGRAPH_GAP_RATIO = 0.9


def blocks(page: OcrPage) -> list[OcrBlock]:
    """Group a page's lines (already in reading order) into paragraphs: rows are boxes sharing a
    vertical centre; a row starts a new paragraph after a gap taller than most of a body line,
    or when its height class (heading or body) differs from the paragraph's."""
    if not page.lines:
        return []
    rows: list[list[OcrLine]] = []
    for line in page.lines:
        if rows:
            last = rows[-1]
            height = median(_height(x) for x in last)
            if abs(_center_y(line) - _center_y(last[0])) <= height / 2:
                last.append(line)
                continue
        rows.append([line])
    body = median(_height(row[0]) for row in rows)

    def is_large(row: list[OcrLine]) -> bool:
        return median(_height(x) for x in row) >= body * _HEADING_HEIGHT_RATIO

    out: list[OcrBlock] = []
    current: list[list[OcrLine]] = []

    def close() -> None:
        if not current:
            return
        cells = [line for row in current for line in row]
        chars = sum(len(x.text) for x in cells) or 1
        out.append(
            OcrBlock(
                text="\n".join(" ".join(x.text for x in row) for row in current),
                large=is_large(current[0]),
                confidence=sum(x.confidence * len(x.text) for x in cells) / chars,
            )
        )
        current.clear()

    for row in rows:
        if current:
            previous = current[-1]
            gap = min(x.box[1] for x in row) - max(x.box[3] for x in previous)
            if gap > body * _PARAGRAPH_GAP_RATIO or is_large(row) != is_large(current[0]):
                close()
        current.append(row)
    close()
    return out


# -- page images ----------------------------------------------------------------------------------


# An image covering at least this share of the page is the page's scan (a scanner writes one
# picture per page; a logo or a stamp is far smaller).
_SCAN_COVER = 0.5
# A scan coarser than this is rendered at it still: below, glyphs are too small to be read.
MIN_SCAN_DPI = 72


def scan_dpi(page: Any) -> float | None:
    """The resolution the page's scan was made at: pixels of the picture covering most of the
    page per inch of the page it covers (a pdfium page). None when no picture covers half the
    page (a drawn or vector page): it has no resolution of its own."""
    import pypdfium2.raw as pdfium_c

    page_width, page_height = page.get_size()
    best: float | None = None
    for obj in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE], max_depth=2):
        left, bottom, right, top = obj.get_bounds()
        width_pt, height_pt = right - left, top - bottom
        if width_pt * height_pt < _SCAN_COVER * page_width * page_height:
            continue
        # Sides matched by length: a picture placed rotated by 90 degrees swaps them.
        px = sorted(obj.get_px_size())
        pt = sorted((width_pt, height_pt))
        dpi = min(px[0] / (pt[0] / 72), px[1] / (pt[1] / 72))
        best = dpi if best is None else max(best, dpi)
    return best


def render_dpi(page: Any, dpi: int, match_scan: bool) -> int:
    """The resolution to render a page at for OCR: ``dpi``; with ``match_scan`` (what the
    parser does) the scan's own resolution up to ``dpi`` (at least MIN_SCAN_DPI), and ``dpi``
    where the page has no scan. A scan rendered at its own resolution is read from its own
    pixels: on the bench's image-only PDFs that read as well as rendering every page at 300
    dpi (1.6 % CER either way, 2.2 % at 200) in little more than half the time, since a 200-dpi
    scan is not inflated to 300 (BENCHMARKS.md, "OCR of scans")."""
    if match_scan:
        native = scan_dpi(page)
        if native is not None:
            return round(min(max(native, MIN_SCAN_DPI), dpi))
    return dpi


def pdf_page_images(
    path: Path, pages: Sequence[int], dpi: int, match_scan: bool = False
) -> Iterator[tuple[int, PILImage]]:
    """Render the given 1-based pages of a PDF to greyscale images at ``dpi`` (see
    ``render_dpi`` for ``match_scan``), one at a time (a 300-page scan must not be held in
    memory at once)."""
    import pypdfium2 as pdfium

    document = pdfium.PdfDocument(str(path), password="")
    try:
        for number in pages:
            page = document[number - 1]
            try:
                scale = render_dpi(page, dpi, match_scan) / 72
                bitmap = page.render(scale=scale, grayscale=True)
                image = bitmap.to_pil()
            finally:
                page.close()
            yield number, image
    finally:
        document.close()


def image_frames(path: Path) -> Iterator[tuple[int, PILImage]]:
    """The frames of an uploaded image (several for a multi-page TIFF), 1-based. EXIF rotation
    is applied: phone photos of forms are stored sideways with a rotation tag."""
    from PIL import Image, ImageOps, ImageSequence

    with Image.open(path) as image:
        for number, frame in enumerate(ImageSequence.Iterator(image), start=1):
            upright = ImageOps.exif_transpose(frame)
            yield number, (upright if upright is not None else frame).convert("L")


def image_frame_count(path: Path) -> int:
    from PIL import Image

    with Image.open(path) as image:
        return int(getattr(image, "n_frames", 1) or 1)


# -- pages to elements ----------------------------------------------------------------------------

_MAX_HEADING_WORDS = 20


def page_elements(page: OcrPage, number: int) -> list[ParsedElement]:
    """A recognised page as parser elements: large-set short paragraphs are Titles (as a PDF's
    larger fonts are), the rest is labelled by unstructured's own ``element_from_text`` (list
    items, narrative text), so OCR'd pages get the structure a text layer would. Every element
    carries its paragraph's OCR confidence."""
    from unstructured.partition.text import element_from_text

    elements: list[ParsedElement] = []
    for block in blocks(page):
        text = " ".join(block.text.split())
        if not text:
            continue
        if block.large and len(text.split()) <= _MAX_HEADING_WORDS:
            category = "Title"
        else:
            category = element_from_text(text).category
            # Without a size signal, a short body line is not a section heading.
            if category == "Title":
                category = "UncategorizedText"
        elements.append(
            ParsedElement(
                text=text,
                category=category,
                page=number,
                ocr_confidence=round(block.confidence, 4),
            )
        )
    return elements


def ocr_frames(
    engine: OcrEngine,
    frames: Iterable[tuple[int, PILImage]],
    total: int,
    deadline: float | None,
    time_limit_s: float | None,
    on_page: Callable[[int, int], None] | None = None,
) -> tuple[list[ParsedElement], list[int]]:
    """OCR page images one by one; returns the elements and the numbers of the pages read.

    The deadline (``time.monotonic()`` seconds) is checked before each page: a 300-page scan
    stops with a clear error at the parser's time limit instead of holding the worker until the
    task is killed. One page may overrun it by its own OCR time (seconds)."""
    elements: list[ParsedElement] = []
    read: list[int] = []
    for done, (number, image) in enumerate(frames):
        if deadline is not None and time.monotonic() > deadline:
            raise ParseError(
                f"OCR stopped at the parser's time limit ({time_limit_s:g} s) after {done} of "
                f"{total} pages: split the scan into smaller files, or raise "
                "PERIMETER_PARSER__TIMEOUT_S"
            )
        elements.extend(page_elements(engine.recognize(image), number))
        read.append(number)
        if on_page is not None:
            on_page(done + 1, total)
    return elements, read


def packaged_model_files() -> list[Path]:
    """The ONNX model files RapidOCR loads, inside its installed package (found without
    importing it: the import pulls OpenCV). Raises FileNotFoundError when any is missing."""
    import importlib.util

    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("rapidocr-onnxruntime is not installed (pip install perimeter)")
    models = Path(spec.origin).parent / "models"
    files = sorted(models.glob("*.onnx"))
    if len(files) < 3:  # detection, direction classifier, recognition
        raise FileNotFoundError(f"rapidocr-onnxruntime's models are missing from {models}")
    return files
