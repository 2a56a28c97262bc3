"""Hybrid retrieval: one query embedding, dense + sparse prefetch, fused in Qdrant."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from opentelemetry.trace import NoOpTracer, Tracer

from perimeter.backends.protocols import ChunkStore, Embedder, Reranker, SparseEncoder
from perimeter.domain import ContextQuery, ScoredChunk, SearchFilter, SparseVector
from perimeter.retrieval.feedback import TermAnalyzer, rm3_expand

Mode = Literal["hybrid", "dense", "sparse"]
# A further text searched beside the question and fused at a weight relative to it: a follow-up's
# earlier turn (perimeter.retrieval.conversation).
ContextText = tuple[str, float]


@dataclass(frozen=True, slots=True)
class SearchContext:
    """What a follow-up's search adds to its standalone query string
    (perimeter.retrieval.conversation); the empty value searches the query as it is.

    ``earlier``: earlier turns' queries, each searched as a query of its own and fused at its
    weight (hybrid mode). ``dense_text``: what the dense side embeds in place of the query (the
    conversation's questions as written: a sentence encoder reads them better than a bag of
    carried keywords). ``lexical``: the lexical query as a mix of parts, each part's vector
    normalised to unit L1 mass and scaled by its share (the follow-up's own words and the
    carried topic words), so the topic's many words cannot drown what is asked now, nor the
    reverse, whatever their counts."""

    earlier: tuple[ContextText, ...] = ()
    dense_text: str | None = None
    lexical: tuple[ContextText, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.earlier or self.dense_text or self.lexical)


NO_CONTEXT = SearchContext()


def mix_sparse(parts: Sequence[tuple[SparseVector | None, float]]) -> SparseVector | None:
    """The share-weighted sum of the parts' vectors, each first scaled to unit L1 mass (a
    part with no terms, or a share of 0 or less, adds nothing)."""
    acc: dict[int, float] = {}
    for vector, share in parts:
        if vector is None or share <= 0:
            continue
        mass = sum(abs(v) for v in vector.values)
        if mass <= 0:
            continue
        for index, value in zip(vector.indices, vector.values, strict=True):
            acc[index] = acc.get(index, 0.0) + share * value / mass
    if not acc:
        return None
    indices = sorted(acc)
    return SparseVector(indices=indices, values=[acc[i] for i in indices])


@dataclass(frozen=True, slots=True)
class RetrievalResult:
    chunks: list[ScoredChunk]
    best_dense_score: float | None
    embed_ms: float
    search_ms: float
    rerank_ms: float = 0.0


class Retriever:
    def __init__(
        self,
        embedder: Embedder,
        store: ChunkStore,
        sparse_encoder: SparseEncoder | None,
        prefetch_limit: int = 50,
        reranker: Reranker | None = None,
        rerank_candidates: int = 20,
        tracer: Tracer = NoOpTracer(),
        feedback_chunks: int = 0,
        feedback_terms: int = 10,
        feedback_original_weight: float = 0.5,
    ) -> None:
        self._tracer = tracer  # perimeter.tracing: retrieval.* spans
        self._embedder = embedder
        self._store = store
        self._sparse = sparse_encoder
        self._prefetch_limit = prefetch_limit
        self._reranker = reranker
        self._rerank_candidates = rerank_candidates
        # RM3 on the lexical side (0 chunks: off). Only a lexical encoder can be expanded.
        self._feedback_chunks = feedback_chunks if isinstance(sparse_encoder, TermAnalyzer) else 0
        self._feedback_terms = feedback_terms
        self._feedback_original_weight = feedback_original_weight

    @property
    def reranker(self) -> Reranker | None:
        return self._reranker

    def _query_sparse(self, question: str, learned: SparseVector | None) -> SparseVector | None:
        if learned is not None:
            return learned
        if self._sparse is not None:
            return self._sparse.encode_queries([question])[0]
        return None

    def retrieve(
        self,
        question: str,
        flt: SearchFilter,
        top_k: int,
        mode: Mode = "hybrid",
        context: SearchContext = NO_CONTEXT,
    ) -> RetrievalResult:
        """``context``: how a follow-up is searched beyond ``question`` (SearchContext). Its
        earlier turns are fused in hybrid mode only; its dense text serves the dense side and
        its lexical mix the sparse side in every mode that searches them."""
        attributes: dict[str, str | int] = {
            "perimeter.tenant.id": flt.tenant_id,
            "perimeter.retrieval.mode": mode,
            "perimeter.retrieval.top_k": top_k,
        }
        if flt.kb is not None:
            attributes["perimeter.kb"] = flt.kb
        with self._tracer.start_as_current_span("retrieval.search", attributes=attributes) as span:
            result = self._retrieve(question, flt, top_k, mode, context)
            span.set_attribute("perimeter.retrieval.results", len(result.chunks))
            if result.best_dense_score is not None:
                span.set_attribute("perimeter.retrieval.best_dense_score", result.best_dense_score)
            return result

    def _retrieve(
        self,
        question: str,
        flt: SearchFilter,
        top_k: int,
        mode: Mode,
        context: SearchContext = NO_CONTEXT,
    ) -> RetrievalResult:
        earlier = [(t, w) for t, w in context.earlier if w > 0] if mode == "hybrid" else []
        dense_text = context.dense_text or question
        lexical = [(t, w) for t, w in context.lexical if w > 0 and t.strip()]
        if not lexical and dense_text != question:
            lexical = [(question, 1.0)]  # the sparse side still searches the query itself
        # Without a separate lexical encoder the sparse vectors come from the model (a learned
        # sparse head), so the lexical parts are encoded with it too.
        learned_lexical = lexical if self._sparse is None and mode != "dense" else []
        t0 = time.perf_counter()
        with self._tracer.start_as_current_span("retrieval.embed_query"):
            # One call for every text this search needs: the model batches them.
            texts = [dense_text, *(t for t, _ in learned_lexical), *(t for t, _ in earlier)]
            encoded_all = self._embedder.encode_queries(texts)
            encoded = encoded_all[0]
            sparse: SparseVector | None = None
            if mode != "dense":
                if lexical and self._sparse is not None:
                    vectors = self._sparse.encode_queries([t for t, _ in lexical])
                    sparse = mix_sparse(
                        [(v, w) for v, (_, w) in zip(vectors, lexical, strict=True)]
                    )
                elif lexical:
                    parts = encoded_all[1 : 1 + len(learned_lexical)]
                    sparse = mix_sparse(
                        [(e.sparse, w) for e, (_, w) in zip(parts, lexical, strict=True)]
                    )
                else:
                    sparse = self._query_sparse(question, encoded.sparse)
            extra = [
                ContextQuery(e.dense, self._query_sparse(text, e.sparse), weight)
                for (text, weight), e in zip(
                    earlier, encoded_all[1 + len(learned_lexical) :], strict=True
                )
            ]
        t1 = time.perf_counter()
        if sparse is not None and encoded.sparse is None and self._feedback_chunks > 0:
            sparse = self._expand(sparse, flt)  # a search: counted in search_ms
        limit = max(top_k, self._rerank_candidates) if self._reranker else top_k
        with self._tracer.start_as_current_span(
            "retrieval.vector_search",
            attributes={"db.system.name": "qdrant", "perimeter.retrieval.limit": limit},
        ) as span:
            if mode == "dense":
                chunks = self._store.dense_search(encoded.dense, flt, limit)
            elif mode == "sparse":
                chunks = self._store.sparse_search(sparse, flt, limit) if sparse else []
            elif extra:
                chunks = self._store.hybrid_search(
                    encoded.dense, sparse, flt, limit, max(self._prefetch_limit, limit), extra
                )
            else:
                chunks = self._store.hybrid_search(
                    encoded.dense, sparse, flt, limit, max(self._prefetch_limit, limit)
                )
            span.set_attribute("perimeter.retrieval.candidates", len(chunks))
        t2 = time.perf_counter()
        rerank_ms = 0.0
        if self._reranker is not None:
            with self._tracer.start_as_current_span(
                "retrieval.rerank", attributes={"perimeter.retrieval.candidates": len(chunks)}
            ):
                chunks = self._reranker.rerank(question, chunks, top_k)
            rerank_ms = (time.perf_counter() - t2) * 1000
        dense_scores = [c.dense_score for c in chunks if c.dense_score is not None]
        return RetrievalResult(
            chunks=chunks,
            best_dense_score=max(dense_scores) if dense_scores else None,
            embed_ms=(t1 - t0) * 1000,
            search_ms=(t2 - t1) * 1000,
            rerank_ms=rerank_ms,
        )

    def _expand(self, sparse: SparseVector, flt: SearchFilter) -> SparseVector:
        """RM3: a first lexical search, its top chunks' terms mixed into the question's."""
        if not sparse.indices or not isinstance(self._sparse, TermAnalyzer):
            return sparse
        with self._tracer.start_as_current_span(
            "retrieval.feedback", attributes={"perimeter.retrieval.limit": self._feedback_chunks}
        ):
            first = self._store.sparse_search(sparse, flt, self._feedback_chunks)
            return rm3_expand(
                sparse,
                first,
                self._sparse,
                terms=self._feedback_terms,
                original_weight=self._feedback_original_weight,
            )
