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
from perimeter.retrieval.search import Retriever, SearchContext, mix_sparse

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
    retriever.retrieve(
        QUESTION, FLT, 5, "hybrid", SearchContext(earlier=((EARLIER, 0.5), ("ignored", 0.0)))
    )
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
    retriever.retrieve(QUESTION, FLT, 5, "dense", SearchContext(earlier=((EARLIER, 0.5),)))
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


# -- split sides: a dense text and a lexical mix (conversation.split_sides) --------------------
FOLLOW_UP = "What was the scatter attributed to?"
CARRIED = "tests thin walled cylinders axial compression"
AS_WRITTEN = f"{EARLIER} {FOLLOW_UP}"


def _mass(vector: SparseVector, ids: set[int]) -> float:
    return sum(v for i, v in zip(vector.indices, vector.values, strict=True) if i in ids)


def test_split_sides_embed_the_questions_as_written_and_mix_the_lexical_parts() -> None:
    retriever, embedder, store = _retriever()
    split = SearchContext(
        earlier=((EARLIER, 0.5),),
        dense_text=AS_WRITTEN,
        lexical=((FOLLOW_UP, 0.3), (CARRIED, 0.7)),
    )
    retriever.retrieve(QUESTION, FLT, 5, "hybrid", split)
    # The dense side embeds the questions as written; the lexical encoder does the rest, so
    # the model is not asked to embed the lexical parts.
    assert embedder.calls == [[AS_WRITTEN, EARLIER]]
    ((dense, sparse, context),) = store.hybrid
    assert dense == [1.0, float(len(AS_WRITTEN))] and len(context) == 1
    own = set(Bm25SparseEncoder().encode_queries([FOLLOW_UP])[0].indices)
    carried = set(Bm25SparseEncoder().encode_queries([CARRIED])[0].indices)
    assert own and carried and not own & carried
    # Each part is normalised to unit mass, then scaled by its share: the follow-up's three
    # words hold 0.3 however many topic words are carried.
    assert sparse is not None
    assert _mass(sparse, own) == pytest.approx(0.3)
    assert _mass(sparse, carried) == pytest.approx(0.7)


def test_split_sides_serve_the_dense_and_sparse_modes_too() -> None:
    retriever, embedder, store = _retriever()
    split = SearchContext(earlier=((EARLIER, 0.5),), dense_text=AS_WRITTEN)
    retriever.retrieve(QUESTION, FLT, 5, "dense", split)
    assert embedder.calls == [[AS_WRITTEN]] and store.dense == [[1.0, float(len(AS_WRITTEN))]]


def test_a_dense_text_without_lexical_parts_keeps_the_query_on_the_sparse_side() -> None:
    retriever, _, store = _retriever()
    retriever.retrieve(QUESTION, FLT, 5, "hybrid", SearchContext(dense_text=AS_WRITTEN))
    ((_, sparse, _),) = store.hybrid
    assert sparse is not None
    assert set(sparse.indices) == set(Bm25SparseEncoder().encode_queries([QUESTION])[0].indices)


class LearnedEmbedder(Embedder):
    """With a sparse head: each text's sparse vector is its one 'term', the text's length."""

    has_sparse = True

    def encode_queries(self, texts: Sequence[str]) -> list[EncodedText]:
        self.calls.append(list(texts))
        return [
            EncodedText(dense=[1.0, float(len(t))], sparse=SparseVector([len(t)], [2.0]))
            for t in texts
        ]


def test_with_a_learned_sparse_head_the_model_encodes_the_lexical_parts() -> None:
    embedder, store = LearnedEmbedder(), Store()
    retriever = Retriever(embedder, store, None)  # type: ignore[arg-type]
    split = SearchContext(dense_text=AS_WRITTEN, lexical=((FOLLOW_UP, 0.3), (CARRIED, 0.7)))
    retriever.retrieve(QUESTION, FLT, 5, "hybrid", split)
    assert embedder.calls == [[AS_WRITTEN, FOLLOW_UP, CARRIED]]
    ((_, sparse, _),) = store.hybrid
    assert sparse == SparseVector(sorted([len(FOLLOW_UP), len(CARRIED)]), [0.3, 0.7])


def test_mix_sparse_normalises_each_part_and_skips_empty_ones() -> None:
    a = SparseVector([1, 2], [2.0, 2.0])
    b = SparseVector([2, 3], [1.0, 3.0])
    mixed = mix_sparse([(a, 0.5), (b, 0.5), (None, 1.0), (SparseVector([], []), 1.0)])
    assert mixed == SparseVector([1, 2, 3], [0.25, 0.25 + 0.125, 0.375])
    assert mix_sparse([(a, 0.0)]) is None
    assert mix_sparse([]) is None
