"""Structure-aware chunking: budgets, overlap, sections/pages, splitting, determinism."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perimeter.domain import Chunk, ParsedElement
from perimeter.ingest.chunking import MAX_SECTION_CHARS, chunk_elements, whitespace_token_count

pytestmark = pytest.mark.unit

count = whitespace_token_count


def words(n: int, prefix: str = "w", every: int = 0) -> str:
    """``n`` distinct words; with ``every`` a sentence ends after each ``every`` words."""
    out = []
    for i in range(n):
        word = f"{prefix}{i}"
        if every and (i + 1) % every == 0:
            word += "."
        out.append(word)
    return " ".join(out)


def para(text: str, page: int | None = 1) -> ParsedElement:
    return ParsedElement(text=text, category="NarrativeText", page=page)


def title(text: str, page: int | None = 1) -> ParsedElement:
    return ParsedElement(text=text, category="Title", page=page)


def test_whitespace_token_count() -> None:
    assert whitespace_token_count("") == 0
    assert whitespace_token_count("  one\ttwo\nthree  ") == 3


def test_small_document_is_one_chunk_with_its_heading() -> None:
    chunks = chunk_elements(
        [title("Intro"), para("Short body text here.")], count, max_tokens=50, overlap_tokens=10
    )
    assert chunks == [
        Chunk(index=0, text="Intro\nShort body text here.", page=1, section="Intro", token_count=5)
    ]


def test_budget_respected_and_indices_sequential() -> None:
    elements = [para(words(30, f"p{i}x", every=6), page=i // 3 + 1) for i in range(12)]
    chunks = chunk_elements(elements, count, max_tokens=64, overlap_tokens=12)
    assert len(chunks) > 3
    assert [c.index for c in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert chunk.token_count == count(chunk.text)
        assert 0 < chunk.token_count <= 64


def test_consecutive_chunks_in_a_section_overlap() -> None:
    elements = [para(words(20, f"e{i}x", every=5)) for i in range(6)]
    chunks = chunk_elements(elements, count, max_tokens=45, overlap_tokens=10)
    assert len(chunks) >= 2
    for previous, current in itertools.pairwise(chunks):
        head = current.text.split()[0]
        # The next chunk starts with words that ended the previous one ...
        assert head in previous.text.split()
        carried = []
        for word in current.text.split():
            if word not in previous.text.split():
                break
            carried.append(word)
        # ... whole trailing sentences, within the overlap budget.
        assert 0 < len(carried) <= 10
        assert previous.text.endswith(" ".join(carried))
        assert carried[-1].endswith(".")


def test_overlap_falls_back_to_words_when_sentences_are_longer_than_budget() -> None:
    elements = [para(words(40, f"e{i}x")) for i in range(3)]  # no sentence ends at all
    chunks = chunk_elements(elements, count, max_tokens=50, overlap_tokens=5)
    assert len(chunks) == 3
    assert chunks[1].text.split()[:5] == chunks[0].text.split()[-5:]


def test_no_overlap_across_sections() -> None:
    elements = [
        title("Alpha"),
        para(words(30, "a", every=5)),
        para(words(30, "b", every=5)),
        title("Beta"),
        para(words(10, "c", every=5)),
    ]
    chunks = chunk_elements(elements, count, max_tokens=40, overlap_tokens=10)
    beta = [c for c in chunks if c.section == "Beta"]
    assert len(beta) == 1
    assert beta[0].text == "Beta\n" + words(10, "c", every=5)
    assert [c.section for c in chunks] == ["Alpha", "Alpha", "Beta"]
    assert chunks[0].text.startswith("Alpha\n")


def test_title_starts_new_chunk_and_names_section() -> None:
    elements = [
        para("Preamble before any heading.", page=1),
        title("Results", page=2),
        para("Numbers went up.", page=2),
        title("Discussion", page=3),
        para("We think it is good.", page=4),
    ]
    chunks = chunk_elements(elements, count, max_tokens=100, overlap_tokens=10)
    assert [(c.section, c.page, c.text) for c in chunks] == [
        (None, 1, "Preamble before any heading."),
        ("Results", 2, "Results\nNumbers went up."),
        ("Discussion", 3, "Discussion\nWe think it is good."),
    ]


def test_consecutive_titles_share_a_chunk() -> None:
    elements = [title("Part I"), title("Chapter 1"), para("Body of chapter one.")]
    chunks = chunk_elements(elements, count, max_tokens=100, overlap_tokens=10)
    assert len(chunks) == 1
    assert chunks[0].text == "Part I\nChapter 1\nBody of chapter one."
    assert chunks[0].section == "Chapter 1"


def test_trailing_title_is_not_lost() -> None:
    chunks = chunk_elements(
        [para("Body."), title("Appendix")], count, max_tokens=100, overlap_tokens=10
    )
    assert [c.text for c in chunks] == ["Body.", "Appendix"]
    assert chunks[1].section == "Appendix"


def test_heading_is_not_left_alone_when_first_paragraph_is_large() -> None:
    body = words(45, "b", every=5)
    chunks = chunk_elements([title("Heading"), para(body)], count, max_tokens=40, overlap_tokens=0)
    assert chunks[0].text.startswith("Heading\nb0 ")
    assert all(c.token_count <= 40 for c in chunks)


def test_long_element_is_split_on_sentences() -> None:
    sentences = [f"Sentence {i} has exactly six words." for i in range(20)]
    chunks = chunk_elements([para(" ".join(sentences))], count, max_tokens=20, overlap_tokens=0)
    assert len(chunks) > 1
    for chunk in chunks:
        assert chunk.token_count <= 20
        # Cuts fall between sentences, never inside one.
        assert re.fullmatch(r"(Sentence \d+ has exactly six words\.\s?)+", chunk.text)


def test_sentence_longer_than_budget_is_split_on_words() -> None:
    text = words(95, "x")  # one "sentence" of 95 words
    chunks = chunk_elements([para(text)], count, max_tokens=30, overlap_tokens=0)
    assert [c.token_count for c in chunks] == [30, 30, 30, 5]
    assert " ".join(c.text for c in chunks) == text


def test_single_oversized_word_is_emitted_alone() -> None:
    def chars(text: str) -> int:  # a counter under which one word can exceed the budget
        return len(text)

    chunks = chunk_elements(
        [para("tiny " + "x" * 50 + " tail")], chars, max_tokens=20, overlap_tokens=5
    )
    assert "x" * 50 in [c.text for c in chunks]
    assert all(c.token_count <= 20 or c.text == "x" * 50 for c in chunks)


def test_pages_come_from_first_contributing_element() -> None:
    elements = [para(words(15, f"p{p}x", every=5), page=p) for p in (1, 1, 2, 3, 3)]
    chunks = chunk_elements(elements, count, max_tokens=32, overlap_tokens=6)
    for chunk in chunks:
        # The first word that is not overlap names the page it came from.
        fresh = [w for w in chunk.text.split() if w.startswith("p")]
        assert chunk.page is not None
        pages_in_chunk = {int(w[1]) for w in fresh}
        assert chunk.page in pages_in_chunk


def test_empty_and_whitespace_elements_never_make_chunks() -> None:
    assert chunk_elements([], count, 10, 2) == []
    assert chunk_elements([para(""), para("   \n"), title(" ")], count, 10, 2) == []
    chunks = chunk_elements([para(""), para("real text"), para("  ")], count, 10, 2)
    assert [c.text for c in chunks] == ["real text"]


def test_deterministic() -> None:
    elements = [title("T"), *[para(words(25, f"d{i}x", every=4)) for i in range(8)]]
    first = chunk_elements(elements, count, max_tokens=40, overlap_tokens=8)
    second = chunk_elements(list(elements), count, max_tokens=40, overlap_tokens=8)
    assert first == second


def test_section_name_is_capped() -> None:
    long_title = " ".join(["word"] * 200)
    chunks = chunk_elements([title(long_title), para("x")], count, 500, 0)
    assert chunks[0].section == long_title[:MAX_SECTION_CHARS]
    assert chunks[0].text.startswith(long_title)  # the text itself is never cut


def test_invalid_budgets_are_refused() -> None:
    with pytest.raises(ValueError):
        chunk_elements([para("x")], count, max_tokens=0, overlap_tokens=0)
    with pytest.raises(ValueError):
        chunk_elements([para("x")], count, max_tokens=10, overlap_tokens=-1)


def test_overlap_as_large_as_budget_still_makes_progress() -> None:
    elements = [para(words(10, f"e{i}x", every=2)) for i in range(5)]
    chunks = chunk_elements(elements, count, max_tokens=10, overlap_tokens=10)
    assert all(c.token_count <= 10 for c in chunks)
    assert " ".join(words(10, f"e{i}x", every=2) for i in range(5)).split()[-1] in (
        chunks[-1].text.split()
    )


# -- property-based ---------------------------------------------------------------------------

_word = st.from_regex(r"[a-z]{1,8}[.!?]?", fullmatch=True)
_element = st.builds(
    lambda ws, is_title, page: ParsedElement(
        text=" ".join(ws), category="Title" if is_title else "NarrativeText", page=page
    ),
    st.lists(_word, min_size=0, max_size=60),
    st.booleans(),
    st.one_of(st.none(), st.integers(min_value=1, max_value=9)),
)


def _uniquify(elements: list[ParsedElement]) -> list[ParsedElement]:
    """Number every word ("ab." -> "ab7.") so each chunk aligns with the input in one way only;
    the trailing punctuation stays, so sentence ends are unchanged."""
    out: list[ParsedElement] = []
    k = 0
    for element in elements:
        renamed = []
        for word in element.text.split():
            stem, punct = re.fullmatch(r"([a-z]+)([.!?]?)", word).groups()  # type: ignore[union-attr]
            renamed.append(f"{stem}{k}{punct}")
            k += 1
        out.append(ParsedElement(" ".join(renamed), element.category, element.page))
    return out


@settings(max_examples=200, deadline=None)
@given(
    raw_elements=st.lists(_element, max_size=25),
    max_tokens=st.integers(min_value=1, max_value=60),
    overlap=st.integers(min_value=0, max_value=20),
    counter=st.sampled_from([whitespace_token_count, len]),
)
def test_properties(
    raw_elements: list[ParsedElement], max_tokens: int, overlap: int, counter: object
) -> None:
    count_tokens = counter  # whitespace words, or characters (where one word can overflow)
    assert callable(count_tokens)
    elements = _uniquify(raw_elements)
    chunks = chunk_elements(elements, count_tokens, max_tokens, overlap)
    stream = [w for e in elements for w in e.text.split()]
    titles = {" ".join(e.text.split()) for e in elements if e.category == "Title"}

    # No empty chunk; budget respected except for a chunk that is one oversized word.
    for i, chunk in enumerate(chunks):
        assert chunk.index == i
        assert chunk.text.strip()
        assert chunk.token_count == count_tokens(chunk.text)
        assert chunk.token_count <= max_tokens or len(chunk.text.split()) == 1
        # A section is a title (cut to MAX_SECTION_CHARS when a "title" is really a paragraph).
        assert chunk.section is None or any(t.startswith(chunk.section) for t in titles)

    # Every chunk is a contiguous run of the input words that may start inside the previous
    # chunk (overlap) but must end beyond it; with the overlap removed, chunks tile the input
    # exactly: nothing lost, nothing reordered, nothing invented.
    end = 0
    for chunk in chunks:
        chunk_words = chunk.text.split()
        assert chunk_words[0] in stream
        start = stream.index(chunk_words[0])
        assert stream[start : start + len(chunk_words)] == chunk_words
        assert start <= end < start + len(chunk_words)
        end = start + len(chunk_words)
    assert end == len(stream)

    # Deterministic.
    assert chunk_elements(elements, count_tokens, max_tokens, overlap) == chunks


@pytest.mark.unit
def test_one_overlap_rule_for_every_collection_and_reindex() -> None:
    from perimeter.ingest.chunking import check_chunking, overlap_tokens_for

    # Unset: the deployment default, at most a quarter of the budget.
    assert overlap_tokens_for(200, None, 40) == 40
    assert overlap_tokens_for(64, None, 40) == 16
    # Explicit: as asked, up to half the budget.
    assert overlap_tokens_for(64, 30, 40) == 30
    assert overlap_tokens_for(64, 50, 40) == 32
    assert overlap_tokens_for(64, 0, 40) == 0
    check_chunking(64, 32)
    check_chunking(None, None)
    for max_tokens, overlap in ((64, 33), (64, -1), (8, None), (10_000, None)):
        with pytest.raises(ValueError):
            check_chunking(max_tokens, overlap)
