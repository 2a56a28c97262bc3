"""Tables are chunked by whole rows, every chunk led by the table's caption and header row."""

from __future__ import annotations

import pytest

from perimeter.domain import ParsedElement
from perimeter.ingest.chunking import chunk_elements, whitespace_token_count

pytestmark = pytest.mark.unit

HEADER = "Branch | 2021 | 2022 | 2023"


def _table(rows: int) -> ParsedElement:
    lines = [HEADER] + [f"Branch {i} | {i}1 | {i}2 | {i}3" for i in range(rows)]
    return ParsedElement(
        "\n".join(lines), "Table", page=4, caption="Table 7: Deposits by branch (EUR m)"
    )


def test_every_chunk_of_a_long_table_carries_caption_and_header() -> None:
    chunks = chunk_elements([_table(60)], whitespace_token_count, max_tokens=60, overlap_tokens=10)
    assert len(chunks) > 3
    seen: list[str] = []
    for chunk in chunks:
        lines = chunk.text.split("\n")
        assert lines[0] == "Table: Table 7: Deposits by branch (EUR m)"
        assert lines[1] == HEADER
        assert chunk.token_count <= 60
        assert chunk.page == 4
        assert chunk.section == "Table 7: Deposits by branch (EUR m)"
        seen.extend(lines[2:])
    # Every row exactly once, whole, in order: no row is split, none is repeated as overlap.
    assert seen == [f"Branch {i} | {i}1 | {i}2 | {i}3" for i in range(60)]


def test_a_table_does_not_share_a_chunk_with_text_around_it() -> None:
    elements = [
        ParsedElement("Results", "Title", page=1),
        ParsedElement("Deposits grew in every branch.", "NarrativeText", page=1),
        _table(3),
        ParsedElement("Outlook is stable.", "NarrativeText", page=2),
    ]
    chunks = chunk_elements(elements, whitespace_token_count, max_tokens=200, overlap_tokens=20)
    assert [c.text.split("\n")[0] for c in chunks] == [
        "Results",
        "Table: Table 7: Deposits by branch (EUR m)",
        "Outlook is stable.",
    ]
    assert chunks[2].section == "Results"  # the title in force again after the table


def test_heading_right_above_a_table_leads_its_first_chunk() -> None:
    elements = [ParsedElement("Deposits", "Title", page=1), _table(2)]
    chunks = chunk_elements(elements, whitespace_token_count, max_tokens=200, overlap_tokens=0)
    assert len(chunks) == 1
    assert chunks[0].text.split("\n")[:3] == [
        "Deposits",
        "Table: Table 7: Deposits by branch (EUR m)",
        HEADER,
    ]


def test_a_row_longer_than_the_budget_is_cut_between_words_under_the_header() -> None:
    long_row = "Remarks | " + " ".join(f"word{i}" for i in range(50))
    table = ParsedElement(f"Field | Value\n{long_row}\nShort | 1", "Table", page=1)
    chunks = chunk_elements([table], whitespace_token_count, max_tokens=20, overlap_tokens=0)
    assert all(c.text.startswith("Field | Value\n") for c in chunks)
    assert all(c.token_count <= 20 for c in chunks)
    body = " ".join(c.text.split("\n", 1)[1] for c in chunks)
    assert body.split() == f"{long_row} Short | 1".split()
    assert chunks[-1].text == "Field | Value\nShort | 1"


def test_table_without_caption_is_named_by_the_section() -> None:
    elements = [
        ParsedElement("Rates", "Title", page=1),
        ParsedElement("Some words first.", "NarrativeText", page=1),
        ParsedElement("Term | Rate\n1y | 3.1%\n2y | 3.4%", "Table", page=1),
    ]
    chunks = chunk_elements(elements, whitespace_token_count, max_tokens=100, overlap_tokens=0)
    assert chunks[-1].text == "Term | Rate\n1y | 3.1%\n2y | 3.4%"
    assert chunks[-1].section == "Rates"


def test_one_row_table_is_plain_text() -> None:
    chunks = chunk_elements(
        [ParsedElement("Only | row", "Table", page=1)], whitespace_token_count, 50, 0
    )
    assert [c.text for c in chunks] == ["Only | row"]
