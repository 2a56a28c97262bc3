"""Structure-aware chunking of parsed elements into token-bounded, overlapping chunks.

Rules, in order of precedence:

* A ``Title`` element closes the current chunk and opens a section named after it. The title text
  is the first line of the section's first chunk, so a heading is searchable even when its
  section is short. Consecutive titles with no body between them stay in one chunk (a heading-only
  chunk per title would be noise in the index).
* Other elements accumulate into the current chunk while ``count_tokens(chunk text)`` stays within
  ``max_tokens``. Budgets are checked on the exact joined text, never on summed estimates, because
  subword tokenizers are not additive across a join.
* An element that alone exceeds the budget is split at sentence boundaries (a regex: the platform
  must not depend on NLTK data), and a sentence still too long is split between words. A single
  word longer than the budget is emitted on its own: cutting inside a word would corrupt it.
  Pieces are cut to ``max_tokens - overlap_tokens`` so the overlap still fits in front of them,
  and they are slices of the original text, so separators such as a table's row breaks survive.
* When a chunk closes because it is full, the next chunk of the same section starts with the
  trailing sentences of the previous one, up to ``overlap_tokens`` (trailing words when not even
  one sentence fits), so a fact straddling the cut is retrievable from either side. No overlap is
  carried across a section change: the previous section's tail would be mislabelled. The overlap
  is capped at half the budget, beyond which chunks would be mostly repetition.

An OCR'd page never shares a chunk with another page (its chunks cite the scanned page alone).
Tables are chunked by whole rows, never mid-row, and every chunk of a table repeats its caption
and header row (``_Chunker.add_table``); a table does not share a chunk with other text.

``Chunk.page`` is the page of the first element contributing new text to the chunk (the overlap is
context, not the citation target); ``Chunk.section`` is the title in force for the chunk's body;
``Chunk.ocr_confidence`` is the character-weighted OCR confidence of that new text (None for a
text layer).
The function is pure and deterministic: the same elements and counter give the same chunks.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from perimeter.domain import Chunk, ParsedElement, mean_ocr_confidence
from perimeter.textproc import sentence_spans

TITLE_CATEGORY = "Title"
# Tables arrive one row per line, the header row first (the parser's ``_table_text``).
TABLE_CATEGORY = "Table"

# A section name is stored in every chunk payload; an over-long "title" (a parser misclassifying
# a paragraph) must not bloat them all.
MAX_SECTION_CHARS = 256

_WORD = re.compile(r"\S+")

# How units are glued: element boundaries keep a line break so the chunk shows the structure;
# pieces of one split element are rejoined as running text.
_ELEMENT_SEP = "\n"
_PIECE_SEP = " "


def whitespace_token_count(text: str) -> int:
    """Cheap default counter: whitespace-separated words."""
    return len(text.split())


def _sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each stripped, non-empty sentence of ``text``, in order: the one splitter
    shared with the parser and the answer verifier (a line break also ends a sentence here)."""
    return sentence_spans(text, line_breaks=True)


@dataclass(slots=True)
class _Unit:
    """An atomic piece of chunk text: an element, or a sentence/word-run of a split element."""

    text: str
    sep: str  # glue placed before this unit when it is not the first of its chunk
    page: int | None
    heading: bool = False
    # The OCR confidence of the element this text came from; None: not read from a page image.
    ocr_confidence: float | None = None


@dataclass(slots=True)
class _Builder:
    units: list[_Unit] = field(default_factory=list)
    overlap: str = ""  # carried tail of the previous chunk; context only
    section: str | None = None

    def text_with(self, extra: _Unit | None = None) -> str:
        parts: list[str] = []
        if self.overlap:
            parts.append(self.overlap)
        units = [*self.units, extra] if extra is not None else self.units
        for unit in units:
            if parts:
                parts.append(unit.sep)
            parts.append(unit.text)
        return "".join(parts)

    @property
    def has_body(self) -> bool:
        return any(not u.heading for u in self.units)

    @property
    def page(self) -> int | None:
        return next((u.page for u in self.units if u.page is not None), None)

    @property
    def ocr_confidence(self) -> float | None:
        """Character-weighted over the units read by OCR (the overlap is the previous chunk's
        and counted there); None when none was."""
        return mean_ocr_confidence((u.text, u.ocr_confidence) for u in self.units)


def overlap_tokens_for(max_tokens: int, requested: int | None, default: int) -> int:
    """The one chunk-overlap rule, for every collection and every re-index.

    An explicit overlap is used as asked, up to half the budget: more would make every chunk
    mostly repetition (and an overlap as large as the budget would leave no room for new text).
    Unset, the deployment's default applies, scaled down to a quarter of a smaller budget, so a
    collection that only asks for small chunks is not mostly overlap either.
    """
    if requested is not None:
        return max(0, min(requested, max_tokens // 2))
    return max(0, min(default, max_tokens // 4))


MIN_CHUNK_TOKENS = 16
MAX_CHUNK_TOKENS = 8192


def check_chunking(max_tokens: int | None, overlap_tokens: int | None) -> None:
    """Refuse chunking a person asked for that the rule above would silently change (collection
    creation and re-index both ask here). Raises ValueError with the reason."""
    if max_tokens is not None and not MIN_CHUNK_TOKENS <= max_tokens <= MAX_CHUNK_TOKENS:
        raise ValueError(
            f"chunk_max_tokens must be between {MIN_CHUNK_TOKENS} and {MAX_CHUNK_TOKENS}"
        )
    if overlap_tokens is not None and (
        overlap_tokens < 0 or (max_tokens is not None and overlap_tokens > max_tokens // 2)
    ):
        raise ValueError("chunk_overlap_tokens must be between 0 and half of chunk_max_tokens")


class _Chunker:
    def __init__(
        self, count_tokens: Callable[[str], int], max_tokens: int, overlap_tokens: int
    ) -> None:
        if max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        if overlap_tokens < 0:
            raise ValueError("overlap_tokens must not be negative")
        self.count = count_tokens
        self.max_tokens = max_tokens
        self.overlap_tokens = overlap_tokens_for(max_tokens, overlap_tokens, overlap_tokens)
        # Pieces of a split element leave room for the overlap that will precede them;
        # pieces cut to the full budget would always push the overlap out.
        self.piece_tokens = max(1, max_tokens - self.overlap_tokens)
        self.chunks: list[Chunk] = []
        self.section: str | None = None
        self.current = _Builder()

    # -- splitting -------------------------------------------------------------------------------

    def _pieces(self, text: str) -> list[str]:
        """``text`` cut into pieces that each fit the budget (save single oversized words).

        Pieces are slices of ``text``, so the original separators (a table's row breaks, for
        instance) survive the split."""
        if self.count(text) <= self.max_tokens:
            return [text]
        spans: list[tuple[int, int]] = []
        for start, end in _sentence_spans(text):
            if self.count(text[start:end]) <= self.piece_tokens:
                spans.append((start, end))
            else:
                spans.extend(self._word_runs(text, start, end))
        return [text[a:b] for a, b in self._pack(text, spans)]

    def _word_runs(self, text: str, start: int, end: int) -> list[tuple[int, int]]:
        """Greedy runs of whole words of ``text[start:end]`` that fit the piece budget."""
        runs: list[tuple[int, int]] = []
        run_start: int | None = None
        run_end = start
        for match in _WORD.finditer(text, start, end):
            if run_start is None:
                run_start, run_end = match.start(), match.end()
            elif self.count(text[run_start : match.end()]) > self.piece_tokens:
                runs.append((run_start, run_end))
                run_start, run_end = match.start(), match.end()
            else:
                run_end = match.end()
        if run_start is not None:
            runs.append((run_start, run_end))
        return runs

    def _pack(self, text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Re-merge adjacent small spans so a split element does not become one unit per
        sentence; fewer, fuller units keep chunk boundaries stable and chunks dense."""
        packed: list[tuple[int, int]] = []
        for start, end in spans:
            if packed and self.count(text[packed[-1][0] : end]) <= self.piece_tokens:
                packed[-1] = (packed[-1][0], end)
            else:
                packed.append((start, end))
        return packed

    # -- overlap ---------------------------------------------------------------------------------

    def _tail(self, text: str, budget: int) -> str:
        """The longest trailing run of whole sentences of ``text`` within ``budget`` tokens;
        failing that, the longest trailing run of words."""
        if budget <= 0:
            return ""
        best = ""
        for start, _ in reversed(_sentence_spans(text)):
            candidate = text[start:].strip()
            if self.count(candidate) > budget:
                break
            best = candidate
        if best:
            return best
        for match in reversed(list(_WORD.finditer(text))):
            candidate = text[match.start() :].strip()
            if self.count(candidate) > budget:
                break
            best = candidate
        return best

    # -- emitting --------------------------------------------------------------------------------

    def _flush(self) -> str:
        """Emit the current chunk (if it has new text); return its text for overlap."""
        builder = self.current
        self.current = _Builder(section=self.section)
        if not builder.units:
            return ""
        text = builder.text_with()
        self.chunks.append(
            Chunk(
                index=len(self.chunks),
                text=text,
                page=builder.page,
                section=builder.section,
                token_count=self.count(text),
                ocr_confidence=builder.ocr_confidence,
            )
        )
        return text

    def _add(self, unit: _Unit, carry_overlap: bool) -> None:
        if self.current.units and self.count(self.current.text_with(unit)) > self.max_tokens:
            previous = self._flush()
            if carry_overlap and self.overlap_tokens > 0:
                room = self.max_tokens - self.count(unit.text)
                tail = self._tail(previous, min(self.overlap_tokens, room))
                self.current.overlap = tail
                # The counter need not be additive over the join; drop the overlap rather than
                # break the budget.
                if tail and self.count(self.current.text_with(unit)) > self.max_tokens:
                    self.current.overlap = ""
        self.current.units.append(unit)
        self.current.section = self.section

    def add_title(self, element: ParsedElement, text: str) -> None:
        if self.current.has_body:
            self._flush()
        self.section = " ".join(text.split())[:MAX_SECTION_CHARS]
        confidence = element.ocr_confidence
        for i, piece in enumerate(self._pieces(text)):
            sep = _PIECE_SEP if i else _ELEMENT_SEP
            unit = _Unit(piece, sep, element.page, heading=True, ocr_confidence=confidence)
            self._add(unit, carry_overlap=False)

    def finish(self) -> list[Chunk]:
        self._flush()
        return self.chunks

    def _heading_only(self) -> bool:
        return bool(self.current.units) and not self.current.has_body

    def _fill_after_heading(self, text: str) -> list[str]:
        """Pieces of ``text`` whose first piece is as many leading sentences as still fit under
        the pending heading, so a heading does not end up alone in a chunk of its own."""
        spans = _sentence_spans(text)
        taken = 0
        for _, end in spans:
            head = _Unit(text[:end], _ELEMENT_SEP, None)
            if self.count(self.current.text_with(head)) > self.max_tokens:
                break
            taken += 1
        if taken == 0:
            return self._pieces(text)
        head_end = spans[taken - 1][1]
        if taken == len(spans):
            return [text[:head_end]]
        return [text[:head_end], *self._pieces(text[spans[taken][0] :])]

    # -- tables ----------------------------------------------------------------------------------

    def add_table(self, element: ParsedElement, text: str) -> None:
        """A table's rows (one per line, the first being the header) packed into chunks of whole
        rows, each led by the table's caption and header row: a chunk holding only rows 40-60
        still says which column a value is in and which table it comes from. A table never
        shares a chunk with surrounding text, so a citation of it points at the table."""
        rows = [row.strip() for row in text.split("\n") if row.strip()]
        if len(rows) < 2:
            self.add_body(element, text)  # one row is no table: nothing to repeat
            return
        pending_heading = ""
        if self._heading_only():
            # The heading above the table leads its first chunk instead of a chunk of its own.
            pending_heading = self.current.text_with()
            self.current = _Builder(section=self.section)
        else:
            self._flush()
        caption = " ".join((element.caption or "").split())[:MAX_SECTION_CHARS] or None
        header, body = rows[0], rows[1:]
        lead_parts = [f"Table: {caption}" if caption else "", header]
        lead = "\n".join(part for part in lead_parts if part)
        if self.count(lead) > self.max_tokens // 2:
            # A header that eats the budget leaves no room for rows: keep the header alone.
            lead = header if self.count(header) <= self.max_tokens // 2 else ""
        section = caption or self.section
        first_lead = "\n".join(part for part in (pending_heading.strip(), lead) if part)

        def emit(lines: list[str], lead_text: str) -> None:
            chunk_text = "\n".join([lead_text, *lines]) if lead_text else "\n".join(lines)
            self.chunks.append(
                Chunk(
                    index=len(self.chunks),
                    text=chunk_text,
                    page=element.page,
                    section=section,
                    token_count=self.count(chunk_text),
                    ocr_confidence=element.ocr_confidence,
                )
            )

        current: list[str] = []
        current_lead = first_lead
        for row in body:
            candidate = "\n".join([current_lead, *current, row]) if current_lead else row
            if current and self.count(candidate) > self.max_tokens:
                emit(current, current_lead)
                current, current_lead = [], lead
            solo = "\n".join([current_lead, row]) if current_lead else row
            if not current and current_lead != lead and self.count(solo) > self.max_tokens:
                current_lead = lead  # the pending heading gives way first
                solo = "\n".join([lead, row]) if lead else row
            if not current and self.count(solo) > self.max_tokens:
                # A single row too long for the budget: cut it between words, each piece still
                # under the header (never merged with another row).
                room = self.max_tokens - (self.count(current_lead) + 1 if current_lead else 0)
                for start, end in self._word_runs_within(row, max(1, room)):
                    emit([row[start:end]], current_lead)
                    current_lead = lead
                continue
            current.append(row)
        if current:
            emit(current, current_lead)

    def _word_runs_within(self, text: str, budget: int) -> list[tuple[int, int]]:
        saved = self.piece_tokens
        self.piece_tokens = budget
        try:
            return self._word_runs(text, 0, len(text))
        finally:
            self.piece_tokens = saved

    def _break_at_scanned_page(self, element: ParsedElement) -> None:
        """A scanned (OCR'd) page does not share a chunk with another page: the page is what a
        reader of a scan looks up, so its chunks cite it alone."""
        body = [u for u in self.current.units if not u.heading]
        if not body or body[-1].page == element.page:
            return
        if body[-1].ocr_confidence is not None or element.ocr_confidence is not None:
            self._flush()

    def add_body(self, element: ParsedElement, text: str) -> None:
        self._break_at_scanned_page(element)
        confidence = element.ocr_confidence
        whole = _Unit(text, _ELEMENT_SEP, element.page, ocr_confidence=confidence)
        if self._heading_only() and self.count(self.current.text_with(whole)) > self.max_tokens:
            pieces = self._fill_after_heading(text)
        else:
            pieces = self._pieces(text)
        for i, piece in enumerate(pieces):
            sep = _PIECE_SEP if i else _ELEMENT_SEP
            unit = _Unit(piece, sep, element.page, ocr_confidence=confidence)
            self._add(unit, carry_overlap=True)


def chunk_elements(
    elements: Sequence[ParsedElement],
    count_tokens: Callable[[str], int],
    max_tokens: int,
    overlap_tokens: int,
) -> list[Chunk]:
    """Group ``elements`` into chunks of at most ``max_tokens`` (see the module docstring)."""
    chunker = _Chunker(count_tokens, max_tokens, overlap_tokens)
    for element in elements:
        text = element.text.strip()
        if not text:
            continue
        if element.category == TITLE_CATEGORY:
            chunker.add_title(element, text)
        elif element.category == TABLE_CATEGORY:
            chunker.add_table(element, text)
        else:
            chunker.add_body(element, text)
    return chunker.finish()
