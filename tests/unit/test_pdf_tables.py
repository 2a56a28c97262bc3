"""Tables from the geometry of a PDF page's text lines (PDF points, y upwards)."""

from __future__ import annotations

import pytest

from perimeter.backends.pdf_tables import TextLine, find_tables

pytestmark = pytest.mark.unit


def _row(y: float, cells: list[tuple[float, float, str]]) -> list[TextLine]:
    return [TextLine(x0, y, x1, y + 10, text, key=(y, x0)) for x0, x1, text in cells]


def _statement(top: float = 700) -> list[TextLine]:
    # Label column left-aligned, number columns right-aligned (extents differ, overlap).
    rows = [
        [(173, 201, "Metric"), (319, 341, "2021"), (359, 381, "2022"), (400, 422, "2023")],
        [(173, 260, "Net interest income"), (316, 341, "4,112"), (356, 381, "4,530"),
         (397, 422, "5,287")],
        [(173, 301, "Fee and commission income"), (316, 341, "1,944"), (397, 422, "2,178")],
        [(173, 263, "Operating expenses"), (313, 341, "-3,601"), (353, 381, "-3,712"),
         (393, 422, "-3,844")],
    ]  # fmt: skip
    return [line for i, cells in enumerate(rows) for line in _row(top - 18 * i, cells)]


def test_aligned_rows_are_a_table_with_empty_cells_kept() -> None:
    prose_before = _row(740, [(78, 410, "The bank did well this year, with higher income.")])
    prose_after = _row(600, [(78, 214, "Costs were kept under control.")])
    lines = [*prose_before, *_statement(), *prose_after]
    (table,) = find_tables(lines)
    assert table.text.split("\n") == [
        "Metric | 2021 | 2022 | 2023",
        "Net interest income | 4,112 | 4,530 | 5,287",
        "Fee and commission income | 1,944 |  | 2,178",
        "Operating expenses | -3,601 | -3,712 | -3,844",
    ]
    assert table.keys == frozenset(line.key for line in _statement())


def test_two_columns_of_prose_are_not_a_table() -> None:
    sentence = "words of running text set in a narrow newspaper column here"
    lines = [
        line
        for i in range(6)
        for line in _row(700 - 14 * i, [(72, 290, sentence), (310, 530, sentence)])
    ]
    assert find_tables(lines) == []


def test_two_rows_are_not_enough_and_a_big_gap_ends_a_table() -> None:
    assert find_tables(_statement()[:8]) == []  # header + one row
    far = [*_statement(700), *_row(400, [(173, 200, "Total"), (316, 341, "9,999")])]
    (table,) = find_tables(far)
    assert "Total" not in table.text
