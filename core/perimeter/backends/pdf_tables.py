"""Tables in a PDF's text layer, found from where the text sits.

pdfminer (the "fast" strategy) has no notion of a table: each cell comes out as its own text
line, and the lines of a row would be indexed as separate one-word paragraphs ("2023", "5,287"),
losing which column and row a value belongs to. Here the lines of one page are grouped into
visual rows (same vertical centre), and a run of at least three consecutive rows whose cells
fall into the same columns (x-extents overlapping one column each; numbers are often
right-aligned, so extents, not left edges, are compared) is a table. Two-column prose would
also line up, so a table's cells must be short (a few words on average).

Pure geometry over (box, text, key) triples: no pdfminer type is needed to test it.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

MIN_ROWS = 3
MIN_COLUMNS = 2
# Cells of real tables are labels and numbers; prose lines in two columns run 8-12 words.
MAX_MEAN_WORDS_PER_CELL = 6.0
# A gap between rows taller than this many row heights ends the table.
MAX_ROW_GAP = 2.5
_EDGE_SLACK = 2.0  # points


@dataclass(frozen=True, slots=True)
class TextLine:
    """One line of a PDF page: its box in PDF points (y grows upwards) and its text."""

    x0: float
    y0: float
    x1: float
    y1: float
    text: str
    key: Hashable

    @property
    def center_y(self) -> float:
        return (self.y0 + self.y1) / 2

    @property
    def height(self) -> float:
        return max(1.0, self.y1 - self.y0)


@dataclass(frozen=True, slots=True)
class PdfTable:
    rows: list[list[str]]  # cells per column, "" where a row has no cell in a column
    keys: frozenset[Hashable]  # the lines it consumed

    @property
    def text(self) -> str:
        """One row per line, cells joined by " | ", the header row first."""
        return "\n".join(" | ".join(row) for row in self.rows)


def _rows(lines: Sequence[TextLine]) -> list[list[TextLine]]:
    rows: list[list[TextLine]] = []
    for line in sorted(lines, key=lambda x: -x.center_y):
        if rows:
            row = rows[-1]
            if abs(line.center_y - row[0].center_y) <= min(x.height for x in row) / 2:
                row.append(line)
                continue
        rows.append([line])
    return [sorted(row, key=lambda x: x.x0) for row in rows]


def _assign(row: list[TextLine], columns: list[tuple[float, float]]) -> list[int] | None:
    """The column of each cell, or None when a cell overlaps no column or several, or two
    cells share one."""
    found: list[int] = []
    for cell in row:
        hits = [i for i, (a, b) in enumerate(columns) if cell.x0 < b and cell.x1 > a]
        if len(hits) != 1 or hits[0] in found:
            return None
        found.append(hits[0])
    return found


def find_tables(lines: Sequence[TextLine]) -> list[PdfTable]:
    """The tables among one page's text lines, top to bottom."""
    tables: list[PdfTable] = []
    run: list[tuple[list[TextLine], list[int]]] = []
    columns: list[tuple[float, float]] = []

    def close() -> None:
        cells = [cell for row, _ in run for cell in row]
        if len(run) >= MIN_ROWS and len(columns) >= MIN_COLUMNS:
            words = sum(len(c.text.split()) for c in cells) / len(cells)
            if words <= MAX_MEAN_WORDS_PER_CELL:
                rows: list[list[str]] = []
                for row, where in run:
                    texts = [""] * len(columns)
                    for cell, column in zip(row, where, strict=True):
                        texts[column] = " ".join(cell.text.split())
                    rows.append(texts)
                tables.append(PdfTable(rows, frozenset(c.key for c in cells)))
        run.clear()

    previous: list[TextLine] | None = None
    for row in _rows(lines):
        assigned = _assign(row, columns) if run else None
        if assigned is not None and len(row) == 1:
            # A lone cell (a row with empty cells) must lie within the table; a prose line
            # after the table starts at the margin and runs past it.
            left, right = min(a for a, _ in columns), max(b for _, b in columns)
            if row[0].x0 < left - _EDGE_SLACK or row[0].x1 > right + _EDGE_SLACK:
                assigned = None
        gap_ok = previous is not None and (
            min(c.y0 for c in previous) - max(c.y1 for c in row)
            <= MAX_ROW_GAP * max(c.height for c in row)
        )
        if run and assigned is not None and gap_ok:
            for cell, column in zip(row, assigned, strict=True):
                a, b = columns[column]
                columns[column] = (min(a, cell.x0), max(b, cell.x1))
            run.append((row, assigned))
        else:
            close()
            if len(row) >= MIN_COLUMNS:
                columns = [(c.x0, c.x1) for c in row]
                run.append((row, list(range(len(row)))))
            else:
                columns = []
        previous = row
    close()
    return tables
