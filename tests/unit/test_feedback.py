"""RM3 query expansion (perimeter.retrieval.feedback) with the real lexical encoder."""

from __future__ import annotations

import pytest

from perimeter.backends.bm25_sparse import Bm25SparseEncoder, term_id
from perimeter.domain import ScoredChunk
from perimeter.retrieval.feedback import TermAnalyzer, feedback_text, rm3_expand

pytestmark = pytest.mark.unit


def _chunk(text: str, score: float, section: str | None = None) -> ScoredChunk:
    return ScoredChunk(
        point_id=text[:8],
        document_id="d",
        chunk_index=0,
        text=text,
        filename="f.txt",
        page=None,
        section=section,
        score=score,
    )


def test_expansion_adds_the_feedback_terms_weighted_by_score() -> None:
    enc = Bm25SparseEncoder()
    assert isinstance(enc, TermAnalyzer)
    query = enc.encode_queries(["compiler"])[0]
    feedback = [
        _chunk("compiler optimization of loops; loops unrolled", 2.0),
        _chunk("compiler parsing grammars", 1.0),
        _chunk("unrelated weather report", 0.0),  # no evidence: skipped
    ]
    out = rm3_expand(query, feedback, enc, terms=3, original_weight=0.5)
    weights = dict(zip(out.indices, out.values, strict=True))
    assert out.indices == sorted(out.indices)
    assert sum(out.values) == pytest.approx(1.0)
    # "compiler" is in the question and in both feedback chunks: the largest weight.
    top = max(weights, key=weights.__getitem__)
    assert top == term_id("compil")
    # "loop" makes up 2/5 of the best chunk's terms: expanded in; "weather" never.
    assert term_id("loop") in weights
    assert term_id("weather") not in weights
    assert len(out.indices) == 3  # question term + the 3 best feedback terms, one shared


def test_original_weight_one_keeps_the_question_and_no_feedback_is_a_no_op() -> None:
    enc = Bm25SparseEncoder()
    query = enc.encode_queries(["sorting algorithms"])[0]
    same = rm3_expand(query, [_chunk("merge sort is fast", 1.0)], enc, original_weight=1.0)
    assert set(same.indices) == set(query.indices)
    assert rm3_expand(query, [], enc) == query
    assert rm3_expand(query, [_chunk("merge sort", -1.0)], enc) == query
    with pytest.raises(ValueError):
        rm3_expand(query, [], enc, original_weight=1.5)


def test_feedback_text_leads_with_the_section_like_ingestion() -> None:
    assert feedback_text(_chunk("body text", 1.0, section="Title")) == "Title\nbody text"
    assert feedback_text(_chunk("Title and body", 1.0, section="Title")) == "Title and body"
