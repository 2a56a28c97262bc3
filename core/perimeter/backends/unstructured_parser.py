"""DocumentParser backed by ``unstructured`` 0.27.30, made safe to run with no network.

What we found in unstructured 0.27.30 (read from its source, then confirmed by a probe with
sockets and ``urllib.request.urlopen`` blocked):

1. **NLTK is gone; spaCy replaced it, and it downloads a model at run time.**
   ``unstructured/nlp/tokenize.py`` implements ``sent_tokenize``, ``word_tokenize`` and
   ``pos_tag`` with spaCy. On first use ``_get_nlp()`` calls ``spacy.load("en_core_web_sm")``;
   when that model is not installed (it is not on PyPI, so it is not installed here)
   ``_install_spacy_model()`` fetches the wheel from github.com with ``urllib`` (120 s timeout)
   under an unbounded ``FileLock`` in the temp dir and installs it into site-packages at run
   time (with the ``installer`` library). The probe saw exactly that: partitioning a 3-line .txt
   looked up github.com for
   ``https://github.com/explosion/spacy-models/releases/download/en_core_web_sm-3.8.0/...`` and
   failed with RuntimeError. No environment switch disables it. NLTK itself is not installed.
2. **Who calls it.** Only the text-classification heuristics in
   ``unstructured/partition/text_type.py`` (``is_possible_narrative_text``/``is_possible_title``
   via ``sentence_count``, ``exceeds_cap_ratio`` and ``contains_verb``), which
   ``partition_text``, ``partition_html`` (md goes through html), ``partition_docx`` (unstyled
   paragraphs), ``partition_pptx``, ``partition_xlsx`` and the PDF text path use to label
   elements Title / NarrativeText / Text. ``text_type`` binds the three functions by name at
   import (``from unstructured.nlp.tokenize import pos_tag, ...``).
3. **Telemetry.** ``import unstructured`` pings packages.unstructured.io (and runs nvidia-smi)
   and every public partitioner sends a runtime event, unless ``DO_NOT_TRACK`` or
   ``SCARF_NO_ANALYTICS`` is non-empty *before* the import. A usage notice is printed unless
   ``UNSTRUCTURED_DISABLE_NOTICE=1``.
4. **PDF.** ``unstructured.partition.pdf`` imports ``pi_heif`` and ``unstructured_inference`` at
   module level, even for the "fast" strategy. The ``pdf`` extra that provides them pulls a CUDA
   torch build, onnxruntime, opencv and google-cloud-vision and downgrades pypdf below 7, so it
   is not installed.

What this module does about it, and why it is the right cut:

* Before the first unstructured import it sets the three opt-out variables (only where unset or
  empty, so an operator's explicit value wins; an empty value would *not* opt out).
* It replaces the three NLP primitives, in ``unstructured.nlp.tokenize`` *and* the names bound in
  ``unstructured.partition.text_type``, with small deterministic offline versions: a regex
  sentence splitter, a regex word tokenizer and a lexicon/suffix verb tagger (only "is this a
  verb" matters: ``contains_verb`` is the sole consumer of the tags). unstructured's own
  classification logic stays untouched; only its spaCy seam is swapped. The effect is limited to
  the Title-vs-NarrativeText label of short one-sentence lines, which structure-bearing formats
  (DOCX styles, HTML/Markdown headings, slide titles) do not even depend on.
* It replaces ``_get_nlp``/``_load_spacy_model``/``_install_spacy_model`` with a function that
  raises, so any path we did not foresee (``cleaners.translate``, ``staging.argilla``) fails fast
  instead of downloading and writing into site-packages.
* PDFs with the "fast" strategy are read with pdfminer.six's public ``extract_pages`` (what
  unstructured's fast strategy runs) and each text box is labelled with unstructured's own
  ``element_from_text``, except that lines set in a clearly larger (or bold) font are Titles:
  fonts are better heading evidence than word heuristics. "hi_res"/"auto" go to
  ``partition_pdf`` and need unstructured's ``pdf`` extra plus layout models staged by an
  operator (``warm_up`` refuses to start without them).
* Every partitioner gets ``languages=["eng"]`` so langdetect is never consulted, and e-mail
  attachments are not partitioned (an attachment can be any format, including ones that need
  OCR models; users upload attachments as documents of their own).

Mapping to our elements: Header/Footer/PageBreak/PageNumber are dropped (per-page boilerplate),
tables become one " | "-joined line per row (from ``text_as_html``; the header row first) with a
caption (the sheet name, or the caption or heading right above the table) that the chunker
repeats in every chunk of the table, and heuristic "Title"s are demoted where the format has a
real title signal (PPTX body lines; e-mail bodies, whose subject becomes the Title). In PDFs the
"fast" path finds tables from the geometry of the text lines (``perimeter.backends.pdf_tables``).

Scans: PDF pages whose text layer is (nearly) empty and image uploads (PNG, JPEG, TIFF) are read
by the ``OcrEngine`` given to the parser (``perimeter.backends.ocr``), page by page, within the
parser's OCR time budget and reporting each page to ``on_page``; OCR'd elements carry their
confidence.

The patch is process-wide and idempotent: nothing in a Perimeter process may download, so it is
right for other unstructured users in the same process too. Nothing runs at import time.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from itertools import groupby
from pathlib import Path
from typing import TYPE_CHECKING, Any

from perimeter.backends.ocr import DEFAULT_OCR_DPI
from perimeter.domain import ParsedDocument, ParsedElement, mean_ocr_confidence
from perimeter.errors import ParseError, UnsupportedFileType
from perimeter.mime import (
    CSV,
    DOCX,
    EMAIL,
    HTML,
    JPEG,
    MARKDOWN,
    PDF,
    PLAIN,
    PNG,
    PPTX,
    TIFF,
    XLSX,
    decode_text,
)
from perimeter.textproc import split_sentences

if TYPE_CHECKING:
    from perimeter.backends.protocols import OcrEngine

logger = logging.getLogger(__name__)

PDF_STRATEGIES = frozenset({"fast", "hi_res", "auto"})
# A PDF page with fewer non-blank characters in its text layer than this is a scan: OCR it.
MIN_PAGE_TEXT_CHARS = 16
LANGUAGES = ["eng"]

_OPT_OUT_ENV = {
    "SCARF_NO_ANALYTICS": "true",
    "DO_NOT_TRACK": "true",
    "UNSTRUCTURED_DISABLE_NOTICE": "1",
}

# Boilerplate repeated on every page/slide; indexing it only adds noise to every chunk.
_DROPPED_CATEGORIES = frozenset({"Header", "Footer", "PageBreak", "PageNumber"})


# -- offline replacements for unstructured's spaCy primitives ---------------------------------


def _lexicon(words: str) -> frozenset[str]:
    return frozenset(words.split())


_WORD_TOKEN = re.compile(r"\w+|[^\w\s]")

# Unambiguous verb forms: auxiliaries, modals and frequent irregular inflections.
_VERB_FORMS = _lexicon(
    """
    am is are was were be been being isn't aren't wasn't weren't 's 're 'm
    has have had having hasn't haven't hadn't do does did doing done don't doesn't didn't
    can could will would shall should may might must can't couldn't won't wouldn't shouldn't
    went gone goes made makes took taken takes got gotten gets saw seen sees knew known knows
    gave given gives found finds thought thinks told tells became becomes showed shown shows
    left felt feels brought brings began begun begins kept keeps held holds wrote written writes
    stood heard hears meant means met ran runs paid pays sat spoke spoken leads led grew grown
    grows lost loses fell fallen falls sent sends built builds understood understands drew drawn
    broke broken spent spends rose risen drove driven bought buys wore worn chose chosen sought
    threw thrown caught dealt won forgot forgotten sold sells taught teaches ate eaten says said
    seems comes came gives includes provides requires contains allows needs wants helps tries
    """
)
# Base forms that are verbs only in a verbal context (after a modal, "to", a pronoun, or
# sentence-initially as an imperative); standing alone most are nouns too ("report", "support").
_BASE_VERBS = _lexicon(
    """
    be have do say go get make know think take see come want look use find give tell work call
    try ask need feel become leave put mean keep let begin seem help talk turn start show hear
    play run move like live believe hold bring happen write provide sit stand lose pay meet
    include continue set learn change lead understand watch follow stop create speak read allow
    add spend grow open walk win offer remember love consider appear buy wait serve die send
    expect build stay fall cut reach kill remain suggest raise pass sell require report decide
    pull return explain hope develop carry break receive agree support hit produce eat cover
    catch draw choose cause point listen realize place close involve increase reduce store
    answer contact click select enter check submit upload download install configure enable
    disable ensure apply process manage improve perform protect define identify compare indicate
    describe contain save delete update review complete note see visit call email
    """
)
_VERB_CONTEXT = _lexicon(
    """
    to will would can could should may might must shall i we you they he she it please not
    don't doesn't didn't won't can't cannot also always never often usually then
    """
)
_NON_VERB_ED = _lexicon(
    "hundred indeed sacred naked wicked kindred speed breed creed greed steed tweed rugged "
    "ragged beloved embed"
)
_NON_VERB_ING = _lexicon(
    "nothing something anything everything morning evening during ceiling string spring sibling "
    "darling pudding wedding building meeting training funding pricing setting settings heading "
    "listing planning marketing engineering accounting banking housing clothing shipping billing "
    "licensing hearing ruling earnings savings offering offerings thing things"
)


def offline_sent_tokenize(text: str) -> list[str]:
    """Split at terminal punctuation followed by whitespace, unless the word before the
    period is a known abbreviation or a single initial ("J. Smith"): the one splitter shared
    with chunking and the answer verifier (perimeter.textproc), without line-break cuts (parser
    text is wrapped at arbitrary points)."""
    return split_sentences(text, line_breaks=False)


def offline_word_tokenize(text: str) -> list[str]:
    return _WORD_TOKEN.findall(text)


_NOT_BEFORE_VERB_S = _lexicon(
    "the a an and or of for with in on at by from our your their its my his her these those "
    "some all many key new"
)


def _looks_like_verb(word: str, previous: str) -> bool:
    if word in _VERB_FORMS:
        return True
    if len(word) >= 5 and word.endswith("ed") and word not in _NON_VERB_ED:
        return True
    if len(word) >= 6 and word.endswith("ing") and word not in _NON_VERB_ING:
        return True
    if word in _BASE_VERBS:
        return previous == "" or previous in _VERB_CONTEXT
    # Third-person "-s" of a known verb after a noun-ish word ("the system stores files");
    # after a determiner or conjunction it is a plural noun ("questions and answers").
    for stem in (word[:-1], word[:-2]) if word.endswith("s") else ():
        if stem in _BASE_VERBS:
            return previous not in _NOT_BEFORE_VERB_S and previous != ""
    return False


def offline_pos_tag(text: str) -> list[tuple[str, str]]:
    """Penn-style tags reduced to what unstructured consumes: "VB" for a likely verb, "NN"
    otherwise (``contains_verb`` only asks whether any tag is a verb tag)."""
    tagged: list[tuple[str, str]] = []
    previous = ""
    for token in offline_word_tokenize(text):
        word = token.lower()
        tagged.append((token, "VB" if _looks_like_verb(word, previous) else "NN"))
        if token.isalnum():
            previous = word
    return tagged


def _refuse_spacy_model(*_args: object, **_kwargs: object) -> Any:
    raise RuntimeError(
        "unstructured tried to load or download the spaCy model en_core_web_sm; Perimeter runs "
        "offline and replaces unstructured's spaCy tokenizers (see perimeter.backends."
        "unstructured_parser)"
    )


_setup_lock = threading.Lock()
_setup_done = False


def _opt_out_of_phone_home() -> None:
    opted_out = any(
        (os.environ.get(k) or "").strip() for k in ("DO_NOT_TRACK", "SCARF_NO_ANALYTICS")
    )
    if "unstructured" in sys.modules and not opted_out:
        # Too late for the import-time ping; the per-call telemetry still honours the variables.
        logger.warning("unstructured was imported before telemetry was disabled")
    for key, value in _OPT_OUT_ENV.items():
        if not (os.environ.get(key) or "").strip():
            os.environ[key] = value


def install_offline_nlp() -> None:
    """Make unstructured safe offline (see the module docstring). Idempotent, thread-safe."""
    global _setup_done
    with _setup_lock:
        if _setup_done:
            return
        _opt_out_of_phone_home()
        from unstructured.nlp import tokenize
        from unstructured.partition import text_type

        replacements: dict[str, Callable[..., Any]] = {
            "sent_tokenize": offline_sent_tokenize,
            "word_tokenize": offline_word_tokenize,
            "pos_tag": offline_pos_tag,
        }
        for module in (tokenize, text_type):
            for name, function in replacements.items():
                setattr(module, name, function)
        for name in ("_get_nlp", "_load_spacy_model", "_install_spacy_model"):
            setattr(tokenize, name, _refuse_spacy_model)
        _setup_done = True


# -- tables -------------------------------------------------------------------------------------


class _TableRows(HTMLParser):
    """Rows of an HTML table as lists of cell texts (unstructured's ``text_as_html``)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            if not self.rows:
                self.rows.append([])
            self.rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _table_text(text: str, html: str | None) -> str:
    """One line per row, cells joined by " | ". unstructured's plain ``text`` of a table is all
    cells run together, which loses the row a value belongs to and gives the chunker no place
    to cut; one row per line keeps rows whole and makes each line a split point."""
    if not html:
        return text
    parser = _TableRows()
    try:
        parser.feed(html)
        parser.close()
    except Exception:  # malformed markup: fall back to unstructured's flat text
        return text
    lines = [" | ".join(cell for cell in row) for row in parser.rows]
    lines = [line for line in lines if line.replace("|", "").strip()]
    return "\n".join(lines) if lines else text


# -- PDF ----------------------------------------------------------------------------------------

# A line set this much larger than the body text is a heading.
_HEADING_SIZE_RATIO = 1.15
_MAX_HEADING_WORDS = 20
_MAX_BOLD_HEADING_WORDS = 12


@dataclass(frozen=True, slots=True)
class _PdfLine:
    text: str
    size: float
    bold: bool
    table: bool = False  # a whole table found by perimeter.backends.pdf_tables, rows in text


def _pdf_fast(path: Path) -> tuple[list[ParsedElement], int]:
    """Text boxes from pdfminer.six (what unstructured's "fast" strategy reads), with headings
    found from the fonts: a run of lines set clearly larger than the document's body size, or
    entirely in bold, is a Title. Fonts are far better evidence of a heading than unstructured's
    word heuristics, so when a document has styled headings, body-font lines that the heuristics
    call "Title" are demoted to text; without any styled heading, the heuristics stand."""
    from pdfminer.high_level import extract_pages
    from pdfminer.layout import LAParams, LTChar, LTTextContainer, LTTextLine
    from unstructured.cleaners.core import clean_extra_whitespace
    from unstructured.partition.text import element_from_text

    boxes: list[tuple[int, list[_PdfLine]]] = []
    chars_by_size: Counter[float] = Counter()
    bold_chars = total_chars = 0
    page_count = 0
    # password="" opens "restrictions only" encrypted PDFs, which validation lets through.
    pages = extract_pages(str(path), password="", laparams=LAParams())
    for page_number, layout in enumerate(_password_errors_explained(pages), start=1):
        page_count = page_number
        # Cells of a table come out as separate lines; they are taken out of the text flow and
        # the table is put in at the place of its first cell, one row per line.
        table_of = {key: t for t in _page_tables(layout) for key in t.keys}
        placed: set[int] = set()
        for box in layout:
            if not isinstance(box, LTTextContainer):
                continue
            lines: list[_PdfLine] = []
            for line in box:
                if not isinstance(line, LTTextLine):
                    continue
                table = table_of.get(id(line))
                if table is not None:
                    if id(table) not in placed:
                        placed.add(id(table))
                        if lines:
                            boxes.append((page_number, lines))
                            lines = []
                        boxes.append((page_number, [_PdfLine(table.text, 0.0, False, True)]))
                    continue
                chars = [c for c in line if isinstance(c, LTChar) and c.get_text().strip()]
                text = line.get_text()
                if not chars or not text.strip():
                    continue
                sizes = sorted(c.size for c in chars)
                size = round(sizes[len(sizes) // 2], 1)
                bold = sum(_is_bold(c.fontname) for c in chars)
                chars_by_size[size] += len(chars)
                bold_chars += bold
                total_chars += len(chars)
                lines.append(_PdfLine(text, size, bold == len(chars)))
            if lines:
                boxes.append((page_number, lines))
    if page_count == 0:
        raise ParseError("the PDF is corrupt or has no readable pages")
    if not boxes:
        return [], page_count

    # A document of tables alone has no body text to measure headings against.
    body_size = chars_by_size.most_common(1)[0][0] if chars_by_size else 0.0
    # In an all-bold document, bold says nothing.
    bold_is_signal = bold_chars < total_chars / 2

    def heading_kind(line: _PdfLine) -> str:
        if line.table:
            return "table"
        if body_size and line.size >= body_size * _HEADING_SIZE_RATIO:
            return "size"
        return "bold" if bold_is_signal and line.bold else ""

    runs: list[tuple[int, str, str]] = []  # (page, heading kind or "", text)
    for page_number, lines in boxes:
        for kind, group in groupby(lines, key=heading_kind):
            if kind == "table":
                runs.extend((page_number, kind, line.text) for line in group)
                continue
            text = clean_extra_whitespace(" ".join(line.text for line in group))
            if text:
                runs.append((page_number, kind, text))

    def is_styled_heading(kind: str, text: str) -> bool:
        words = len(text.split())
        limit = _MAX_HEADING_WORDS if kind == "size" else _MAX_BOLD_HEADING_WORDS
        return kind in ("size", "bold") and words <= limit

    styled = any(is_styled_heading(kind, text) for _, kind, text in runs)
    elements: list[ParsedElement] = []
    for page_number, kind, text in runs:
        if kind == "table":
            caption = _table_caption(None, elements)
            elements.append(ParsedElement(text, "Table", page=page_number, caption=caption))
            continue
        if is_styled_heading(kind, text):
            elements.append(ParsedElement(text=text, category="Title", page=page_number))
            continue
        element = element_from_text(text)
        category = element.category
        if styled and category == "Title":
            category = "UncategorizedText"
        elements.append(ParsedElement(text=element.text, category=category, page=page_number))
    return elements, page_count


def _page_tables(layout: Any) -> list[Any]:
    """Tables among the text lines of one pdfminer page (keys are the lines' ids)."""
    from pdfminer.layout import LTTextContainer, LTTextLine

    from perimeter.backends.pdf_tables import TextLine, find_tables

    lines = [
        TextLine(*line.bbox, text=line.get_text(), key=id(line))
        for box in layout
        if isinstance(box, LTTextContainer)
        for line in box
        if isinstance(line, LTTextLine) and line.get_text().strip()
    ]
    return find_tables(lines)


def _password_errors_explained(pages: Iterator[Any]) -> Iterator[Any]:
    """pdfminer's password errors carry no message; say what the user can do."""
    from pdfminer.pdfdocument import PDFEncryptionError, PDFPasswordIncorrect

    try:
        yield from pages
    except PDFPasswordIncorrect as exc:
        raise ParseError(
            "the PDF is password-protected: upload a copy without an open password"
        ) from exc
    except PDFEncryptionError as exc:
        raise ParseError(f"the PDF uses an unsupported encryption ({exc})") from exc


def _is_bold(fontname: str) -> bool:
    name = fontname.lower()
    return "bold" in name or "black" in name or "heavy" in name


# -- the parser ---------------------------------------------------------------------------------

_Handler = Callable[[Path], tuple[list[ParsedElement], int | None]]


class UnstructuredParser:
    """``DocumentParser`` over unstructured's per-type partitioners; offline by construction."""

    def __init__(
        self,
        pdf_strategy: str = "fast",
        ocr: OcrEngine | None = None,
        ocr_dpi: int = DEFAULT_OCR_DPI,
        ocr_time_limit_s: float | None = None,
    ) -> None:
        """``ocr``: the engine for images and PDF pages without a text layer (None: OCR off,
        such files fail with "no extractable text"). ``ocr_dpi``: the highest resolution a
        scanned page is rendered at (its scan's own, up to this; this for a page without a
        scan picture: perimeter.backends.ocr.render_dpi). ``ocr_time_limit_s``: the OCR budget
        of one document (perimeter.backends.ocr.ocr_frames)."""
        if pdf_strategy not in PDF_STRATEGIES:
            raise ValueError(f"pdf_strategy must be one of {sorted(PDF_STRATEGIES)}")
        self.pdf_strategy = pdf_strategy
        self.ocr = ocr
        self.ocr_dpi = ocr_dpi
        self.ocr_time_limit_s = ocr_time_limit_s

    def warm_up(self) -> None:
        """Pay the import cost (seconds: spaCy and torch come in through unstructured's
        text_type module) before the first document instead of during it."""
        if (
            self.pdf_strategy != "fast"
            and importlib.util.find_spec("unstructured_inference") is None
        ):
            # Fail at start-up, not on every PDF: without the extra each one would be refused.
            raise RuntimeError(
                f"pdf_strategy={self.pdf_strategy!r} needs unstructured's 'pdf' extra "
                "(unstructured-inference) and staged layout models; use 'fast'"
            )
        install_offline_nlp()
        import unstructured.partition.docx
        import unstructured.partition.text  # noqa: F401

        if self.ocr is not None:
            self.ocr.warm_up()

    def parse(
        self,
        path: Path,
        content_type: str,
        filename: str,
        on_page: Callable[[int, int], None] | None = None,
    ) -> ParsedDocument:
        mime = content_type.split(";", 1)[0].strip().lower()
        handlers: dict[str, _Handler] = {
            PDF: lambda p: self._pdf(p, on_page),
            PNG: lambda p: self._image(p, on_page),
            JPEG: lambda p: self._image(p, on_page),
            TIFF: lambda p: self._image(p, on_page),
            DOCX: self._docx,
            PPTX: self._pptx,
            XLSX: self._xlsx,
            HTML: self._html,
            MARKDOWN: self._markdown,
            PLAIN: self._text,
            CSV: self._csv,
            EMAIL: self._email,
        }
        handler = handlers.get(mime)
        if handler is None:
            raise UnsupportedFileType(f"no parser for content type {content_type!r}")
        install_offline_nlp()
        try:
            elements, page_count = handler(path)
        except ParseError as exc:
            raise ParseError(f"{filename}: {exc}") from exc
        except ValueError as exc:
            # Our own InvalidDocument (text decoding) and unstructured's input errors.
            raise ParseError(f"{filename}: {exc}") from exc
        except Exception as exc:
            raise ParseError(
                f"{filename} could not be parsed as {mime} ({type(exc).__name__}: {exc})"
            ) from exc
        if not elements:
            if mime == PDF and self.ocr is None:
                raise ParseError(
                    f"{filename}: no extractable text: the PDF may be scanned images (OCR is "
                    "off: PERIMETER_PARSER__OCR_ENABLED)"
                )
            if mime in (PDF, PNG, JPEG, TIFF):
                raise ParseError(f"{filename}: no extractable text: OCR found no text")
            raise ParseError(f"{filename}: no extractable text")
        seen_pages = [e.page for e in elements if e.page is not None]
        pages = max([*seen_pages, page_count or 0]) or None
        ocr_pages = tuple(
            sorted({e.page for e in elements if e.ocr_confidence is not None and e.page})
        )
        return ParsedDocument(
            elements=elements,
            pages=pages,
            ocr_pages=ocr_pages,
            ocr_confidence=_mean_confidence(elements),
        )

    # -- per type --------------------------------------------------------------------------------

    def _ocr_deadline(self) -> float | None:
        if self.ocr_time_limit_s is None:
            return None
        return time.monotonic() + self.ocr_time_limit_s

    def _pdf(
        self, path: Path, on_page: Callable[[int, int], None] | None = None
    ) -> tuple[list[ParsedElement], int | None]:
        if self.pdf_strategy == "fast":
            elements, page_count = _pdf_fast(path)
            if self.ocr is None:
                return elements, page_count
            return self._ocr_textless_pages(path, elements, page_count, on_page), page_count
        try:
            from unstructured.partition.pdf import partition_pdf
        except ImportError as exc:
            raise ParseError(
                f"pdf_strategy={self.pdf_strategy!r} needs unstructured's 'pdf' extra and "
                "layout models staged by an operator; use 'fast'"
            ) from exc
        raw = partition_pdf(filename=str(path), strategy=self.pdf_strategy, languages=LANGUAGES)
        return _convert(raw), None

    def _ocr_textless_pages(
        self,
        path: Path,
        elements: list[ParsedElement],
        page_count: int,
        on_page: Callable[[int, int], None] | None,
    ) -> list[ParsedElement]:
        """OCR only the pages whose text layer is (nearly) empty: a mixed PDF keeps its real text
        and pays OCR only for its scanned pages. A page with a few stray characters (a stamped
        page number on a scan) counts as textless, and its stray text is replaced by the OCR."""
        from perimeter.backends.ocr import ocr_frames, pdf_page_images

        assert self.ocr is not None
        chars: Counter[int] = Counter()
        for element in elements:
            if element.page is not None:
                chars[element.page] += len("".join(element.text.split()))
        textless = [n for n in range(1, page_count + 1) if chars[n] < MIN_PAGE_TEXT_CHARS]
        if not textless:
            return elements
        scanned, _ = ocr_frames(
            self.ocr,
            pdf_page_images(path, textless, self.ocr_dpi, match_scan=True),
            len(textless),
            self._ocr_deadline(),
            self.ocr_time_limit_s,
            on_page,
        )
        kept = [e for e in elements if e.page not in set(textless)]
        # Stable sort: page order, and within a page the order each source gave.
        return sorted([*kept, *scanned], key=lambda e: e.page or 0)

    def _image(
        self, path: Path, on_page: Callable[[int, int], None] | None = None
    ) -> tuple[list[ParsedElement], int | None]:
        from perimeter.backends.ocr import image_frame_count, image_frames, ocr_frames

        if self.ocr is None:
            raise ParseError("images are read by OCR, which is off (PERIMETER_PARSER__OCR_ENABLED)")
        total = image_frame_count(path)
        elements, _ = ocr_frames(
            self.ocr,
            image_frames(path),
            total,
            self._ocr_deadline(),
            self.ocr_time_limit_s,
            on_page,
        )
        return elements, total

    def _docx(self, path: Path) -> tuple[list[ParsedElement], int | None]:
        from unstructured.partition.docx import partition_docx

        return _convert(partition_docx(filename=str(path), languages=LANGUAGES)), None

    def _pptx(self, path: Path) -> tuple[list[ParsedElement], int | None]:
        from unstructured.partition.pptx import partition_pptx

        raw = partition_pptx(filename=str(path), languages=LANGUAGES)
        # A slide is a section named by its title shape (category_depth 0). Short body lines
        # that the word heuristics call "Title" (depth >= 1) are bullets, not sections.
        return _convert(raw, keep_title=lambda e: not _depth(e)), None

    def _xlsx(self, path: Path) -> tuple[list[ParsedElement], int | None]:
        from unstructured.partition.xlsx import partition_xlsx

        raw = partition_xlsx(filename=str(path), include_header=True, languages=LANGUAGES)
        return _convert(raw), None

    def _html(self, path: Path) -> tuple[list[ParsedElement], int | None]:
        from unstructured.partition.html import partition_html

        text = decode_text(path.read_bytes())
        return _convert(partition_html(text=text, languages=LANGUAGES)), None

    def _markdown(self, path: Path) -> tuple[list[ParsedElement], int | None]:
        from unstructured.partition.md import partition_md

        text = decode_text(path.read_bytes())
        return _convert(partition_md(text=text, languages=LANGUAGES)), None

    def _text(self, path: Path) -> tuple[list[ParsedElement], int | None]:
        from unstructured.partition.text import partition_text

        text = decode_text(path.read_bytes())
        return _convert(partition_text(text=text, languages=LANGUAGES)), None

    def _csv(self, path: Path) -> tuple[list[ParsedElement], int | None]:
        import io

        from unstructured.partition.csv import partition_csv

        # Decode with validation's rule and hand unstructured UTF-8: it assumes UTF-8 and would
        # fail on the Latin-1 files that validation accepts.
        data = decode_text(path.read_bytes()).encode("utf-8")
        raw = partition_csv(
            file=io.BytesIO(data), encoding="utf-8", include_header=True, languages=LANGUAGES
        )
        return _convert(raw), None

    def _email(self, path: Path) -> tuple[list[ParsedElement], int | None]:
        from unstructured.partition.email import partition_email

        raw = partition_email(filename=str(path), process_attachments=False, languages=LANGUAGES)
        # Mail bodies have no headings: the short lines the heuristics call "Title" are
        # greetings and signatures ("Hi Bob,", "Alice"). The subject is the one real title.
        body = _convert(raw, keep_title=lambda e: False)
        return [*_email_header_elements(path, body), *body], None


def _depth(element: Any) -> int:
    depth = getattr(getattr(element, "metadata", None), "category_depth", None)
    return depth if isinstance(depth, int) else 0


def _convert(
    raw: Iterable[Any], keep_title: Callable[[Any], bool] | None = None
) -> list[ParsedElement]:
    """unstructured elements to ours: drop boilerplate and empty text, rows for tables."""
    converted: list[ParsedElement] = []
    for element in raw:
        category = str(getattr(element, "category", "") or "UncategorizedText")
        if category in _DROPPED_CATEGORIES:
            continue
        metadata = getattr(element, "metadata", None)
        text = str(getattr(element, "text", "") or "")
        caption = None
        if category == "Table":
            text = _table_text(text, getattr(metadata, "text_as_html", None))
            caption = _table_caption(metadata, converted)
        text = text.strip()
        if not text:
            continue
        if category == "Title" and keep_title is not None and not keep_title(element):
            category = "UncategorizedText"
        page = getattr(metadata, "page_number", None)
        converted.append(
            ParsedElement(
                text=text,
                category=category,
                page=page if isinstance(page, int) else None,
                caption=caption,
            )
        )
    return converted


_CAPTION = re.compile(r"^(?:table|tab\.|tabelle|tableau|tabla)\s*[\dIVXivx]+\b", re.I)
_MAX_CAPTION_WORDS = 30
_CAPTION_AT_END = re.compile(r"(?<=[.!?:]\s)(?:Table|Tab\.)\s*[\dIVX]+\b[^.!?]*[.!?)]?$")


def _table_caption(metadata: Any, before: list[ParsedElement]) -> str | None:
    """A table's name: the sheet name for a spreadsheet; else the element right above it when
    it is a caption ("Table 2: ...") or a heading. Chunks of the table repeat it."""
    sheet = getattr(metadata, "page_name", None)
    if isinstance(sheet, str) and sheet.strip():
        return sheet.strip()
    if not before:
        return None
    previous = before[-1]
    short = len(previous.text.split()) <= _MAX_CAPTION_WORDS
    if short and (previous.category in ("Title", "FigureCaption") or _CAPTION.match(previous.text)):
        return " ".join(previous.text.split())
    # A PDF text box may hold the paragraph and the caption line under it together.
    tail = _CAPTION_AT_END.search(previous.text)
    if tail and len(tail.group(0).split()) <= _MAX_CAPTION_WORDS:
        return " ".join(tail.group(0).split())
    return None


def _mean_confidence(elements: Iterable[ParsedElement]) -> float | None:
    """Character-weighted mean OCR confidence of the OCR'd elements; None when none was OCR'd."""
    return mean_ocr_confidence((e.text, e.ocr_confidence) for e in elements)


def _email_header_elements(path: Path, body: list[ParsedElement]) -> list[ParsedElement]:
    """The subject as a Title plus a From/To/Date line, which unstructured keeps only in
    metadata; "the mail from Alice about the budget" must be findable by its subject."""
    from email import message_from_binary_file, policy

    with path.open("rb") as fh:
        message = message_from_binary_file(fh, policy=policy.default)
    subject = " ".join(str(message.get("Subject", "") or "").split())
    header_bits = [
        f"{name}: {value}"
        for name in ("From", "To", "Date")
        if (value := " ".join(str(message.get(name, "") or "").split()))
    ]
    extra: list[ParsedElement] = []
    if subject and subject not in {e.text for e in body}:
        extra.append(ParsedElement(text=subject, category="Title"))
    if header_bits:
        extra.append(ParsedElement(text="; ".join(header_bits), category="UncategorizedText"))
    return extra
