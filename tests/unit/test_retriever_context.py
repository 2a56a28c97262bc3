"""A follow-up's earlier turns searched beside it: what the Retriever hands the store
(perimeter.retrieval.search, ``context``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from perimeter.backends.bm25_sparse import Bm25SparseEncoder, term_id
from perimeter.domain import (
    ContextQuery,
    EncodedText,
    ScoredChunk,
    SearchFilter,
    SparseVector,
    fusion_queries,
)
from perimeter.retrieval.search import Retriever

pytestmark = pytest.mark.unit


class Embedder:
    """Dense vector = [1, number of characters]: tells the texts apart."""

    dimension = 2
    has_sparse = False

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def warm_up(self) -> None:
        pass

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def encode_documents(self, texts: Sequence[str]) -> list[EncodedText]:
        return self.encode_queries(texts)

    def encode_queries(self, texts: Sequence[str]) -> list[EncodedText]:
        self.calls.append(list(texts))
        return [EncodedText(dense=[1.0, float(len(t))]) for t in texts]


class Store:
    def __init__(self) -> None:
        self.hybrid: list[tuple[Any, ...]] = []
        self.dense: list[list[float]] = []

    def hybrid_search(
        self,
        dense: list[float],
        sparse: SparseVector | None,
        flt: SearchFilter,
        limit: int,
        prefetch_limit: int,
        context: Sequence[ContextQuery] = (),
    ) -> list[ScoredChunk]:
        self.hybrid.append((dense, sparse, list(context)))
        return []

    def dense_search(self, dense: list[float], flt: SearchFilter, limit: int) -> list[ScoredChunk]:
        self.dense.append(dense)
        return []

    def sparse_search(
        self, sparse: SparseVector, flt: SearchFilter, limit: int
    ) -> list[ScoredChunk]:
        return []


FLT = SearchFilter(tenant_id="t")
QUESTION = "What was the scatter attributed to? thin walled cylinders"
EARLIER = "What did the tests on thin-walled cylinders find?"


def _retriever() -> tuple[Retriever, Embedder, Store]:
    embedder, store = Embedder(), Store()
    return Retriever(embedder, store, Bm25SparseEncoder()), embedder, store  # type: ignore[arg-type]


def test_context_texts_are_embedded_with_the_question_and_fused_at_their_weight() -> None:
    retriever, embedder, store = _retriever()
    retriever.retrieve(QUESTION, FLT, 5, "hybrid", [(EARLIER, 0.5), ("ignored", 0.0)])
    assert embedder.calls == [[QUESTION, EARLIER]]  # one model call; weight 0 is dropped
    ((dense, sparse, context),) = store.hybrid
    assert dense == [1.0, float(len(QUESTION))]
    (earlier,) = context
    assert earlier.weight == 0.5 and earlier.dense == [1.0, float(len(EARLIER))]
    # The earlier turn's lexical vector is its own, not the question's.
    assert earlier.sparse is not None and term_id("test") in earlier.sparse.indices
    assert sparse is not None and term_id("test") not in sparse.indices


def test_without_context_the_store_sees_the_plain_hybrid_call() -> None:
    retriever, embedder, store = _retriever()
    retriever.retrieve(QUESTION, FLT, 5, "hybrid")
    assert embedder.calls == [[QUESTION]] and store.hybrid[0][2] == []


def test_dense_and_sparse_modes_search_the_question_alone() -> None:
    retriever, embedder, store = _retriever()
    retriever.retrieve(QUESTION, FLT, 5, "dense", [(EARLIER, 0.5)])
    assert embedder.calls == [[QUESTION]] and store.dense == [[1.0, float(len(QUESTION))]]
    assert store.hybrid == []


def test_fusion_queries_weights_only_under_rrf() -> None:
    main = ([1.0, 0.0], SparseVector([1], [1.0]))
    earlier = ContextQuery([0.0, 1.0], None, 0.5)
    silent = ContextQuery([0.0, 1.0], None, 0.0)
    assert fusion_queries(*main, [earlier, silent], "rrf") == [
        ContextQuery(main[0], main[1], 1.0),
        earlier,
    ]
    # DBSF has no per-list weights: an earlier turn would count as much as the question.
    assert fusion_queries(*main, [earlier], "dbsf") == [ContextQuery(main[0], main[1], 1.0)]
