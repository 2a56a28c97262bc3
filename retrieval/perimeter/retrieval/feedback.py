"""Pseudo-relevance feedback for the lexical side of retrieval: RM3.

A first sparse search returns the top chunks; their terms, weighted by how much of each chunk
they make up and by the chunk's score (relevance model 1), give a few expansion terms, which are
interpolated with the question's own terms (RM3). The expanded query then runs the real search.

The parameters are Anserini's defaults (10 feedback chunks, 10 terms, original query weight
0.5), not values fitted to a collection. It is off by default (``retrieval.feedback_chunks`` = 0):
on the development collections it did not help the hybrid (CISI -0.002, CACM -0.018 nDCG@10
against the shipped fusion, offline prototype; BENCHMARKS.md, "Retrieval quality across
collections"). It stays as an option, measured, not as a default.

Only the lexical BM25 encoder can be expanded this way: it says which terms a text holds
(:class:`TermAnalyzer`). A learned sparse head (BGE-M3) has no such vocabulary, and is left as is.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from perimeter.domain import ScoredChunk, SparseVector


@runtime_checkable
class TermAnalyzer(Protocol):
    """A sparse encoder whose vector indices are the ids of the terms of a text."""

    def term_ids(self, text: str) -> list[int]:
        """The ids of the text's terms, in order, repeated as often as they occur."""
        ...


def feedback_text(chunk: ScoredChunk) -> str:
    """The text the chunk's sparse vector was made from: ingestion leads a chunk with its
    section title when the chunk text does not already start with it (``embedding_text``)."""
    if chunk.section and not chunk.text.startswith(chunk.section):
        return f"{chunk.section}\n{chunk.text}"
    return chunk.text


def rm3_expand(
    query: SparseVector,
    feedback: Sequence[ScoredChunk],
    analyzer: TermAnalyzer,
    terms: int = 10,
    original_weight: float = 0.5,
) -> SparseVector:
    """The question's vector interpolated with the relevance model of ``feedback``.

    Both halves are normalised to sum to one before mixing, so ``original_weight`` is the share of
    the question's own terms whatever its length. Chunks with a non-positive score carry no
    evidence and are skipped; with no usable feedback the query comes back unchanged.
    """
    if not 0.0 <= original_weight <= 1.0:
        raise ValueError("original_weight must be within [0, 1]")
    if not query.indices or terms <= 0:
        return query
    model: dict[int, float] = {}
    for chunk in feedback:
        if chunk.score <= 0:
            continue
        ids = analyzer.term_ids(feedback_text(chunk))
        if not ids:
            continue
        share = chunk.score / len(ids)  # P(t|chunk) * score, summed over the chunk's tokens
        for term in ids:
            model[term] = model.get(term, 0.0) + share
    best = heapq.nlargest(terms, model.items(), key=lambda item: item[1])
    fb_total = sum(weight for _, weight in best)
    if fb_total <= 0:
        return query
    q_total = sum(query.values)
    if q_total <= 0:
        return query
    mixed: dict[int, float] = {
        i: original_weight * v / q_total for i, v in zip(query.indices, query.values, strict=True)
    }
    for term, weight in best:
        mixed[term] = mixed.get(term, 0.0) + (1.0 - original_weight) * weight / fb_total
    indices = sorted(i for i, v in mixed.items() if v > 0)
    return SparseVector(indices=indices, values=[mixed[i] for i in indices])
