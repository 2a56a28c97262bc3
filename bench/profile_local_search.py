"""Where a retrieval-only query's time goes in qdrant-client's local mode (the embedded default).

    .venv/bin/python -m bench.profile_local_search --points 10000 --queries 20

Builds a local-mode collection through Perimeter's own ``QdrantChunkStore`` (named dense and
sparse vectors, the payload every chunk carries), then times the store's searches alone, with no
HTTP and no encoder: the dense prefetch alone, the sparse prefetch alone, and the hybrid query
(both prefetches fused by RRF, as the API runs it). A cProfile of the hybrid queries attributes
the time to qdrant-client's functions. Vectors are random (384-d unit dense; sparse with the
term count of a CISI chunk), because brute-force cost depends on the number of points and
non-zeros, not on their meaning. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import git_rev, machine

DIM = 384
VOCAB = 30_000
TERMS_PER_CHUNK = 60  # distinct BM25 terms of a ~150-token CISI chunk
TERMS_PER_QUERY = 12


def _sparse(rng: np.random.Generator, n_terms: int) -> Any:
    from perimeter.domain import SparseVector

    idx = np.sort(rng.choice(VOCAB, size=n_terms, replace=False))
    return SparseVector(indices=idx.tolist(), values=rng.random(n_terms).round(4).tolist())


def build(path: Path, points: int, seed: int = 7) -> Any:
    from perimeter.backends.qdrant_store import QdrantChunkStore
    from perimeter.domain import ChunkRecord, point_id_for

    store = QdrantChunkStore(collection="profile", path=path, rrf_k=20, sparse_weight=1.5)
    store.ensure_collection(DIM, sparse_idf=True)
    rng = np.random.default_rng(seed)
    batch: list[ChunkRecord] = []
    for i in range(points):
        vec = rng.standard_normal(DIM).astype(np.float32)
        vec /= np.linalg.norm(vec)
        doc = uuid.UUID(int=i // 2).hex
        batch.append(
            ChunkRecord(
                point_id=point_id_for(doc, i % 2),
                tenant_id="default",
                document_id=doc,
                chunk_index=i % 2,
                text="x" * 900,  # payload size of a 200-token chunk
                filename=f"doc{i // 2}.txt",
                page=None,
                section=None,
                dense=vec.tolist(),
                sparse=_sparse(rng, TERMS_PER_CHUNK),
            )
        )
        if len(batch) == 1000:
            store.upsert(batch)
            batch = []
    if batch:
        store.upsert(batch)
    return store


def _time(fn: Any, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", type=int, default=10_000)
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--top", type=int, default=12, help="profile rows to print")
    args = ap.parse_args()

    from perimeter.domain import SearchFilter

    rng = np.random.default_rng(99)
    flt = SearchFilter(tenant_id="default", kb="default")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        store = build(Path(tmp), args.points)
        build_s = time.perf_counter() - t0
        q = rng.standard_normal(DIM).astype(np.float32)
        dense = (q / np.linalg.norm(q)).tolist()
        sparse = _sparse(rng, TERMS_PER_QUERY)

        def hybrid() -> None:
            store.hybrid_search(dense, sparse, flt, limit=5, prefetch_limit=50)

        hybrid()  # warm: the first query builds local mode's in-memory structures
        dense_ms = _time(lambda: store.dense_search(dense, flt, 50), args.queries)
        sparse_ms = _time(lambda: store.sparse_search(sparse, flt, 50), args.queries)
        hybrid_ms = _time(hybrid, args.queries)
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(args.queries):
            hybrid()
        profiler.disable()
        store.close()

    stats = pstats.Stats(profiler)
    rows = []
    for (file, line, func), (_cc, _nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append((ct, tt, f"{Path(file).name}:{line}:{func}"))
    rows.sort(reverse=True)
    hybrid_total = sum(hybrid_ms)
    top = [
        {
            "function": name,
            "cumulative_ms_per_query": round(ct * 1000 / args.queries, 2),
            "own_ms_per_query": round(tt * 1000 / args.queries, 2),
        }
        for ct, tt, name in rows[: args.top]
    ]
    result = {
        "points": args.points,
        "queries": args.queries,
        "build_s": round(build_s, 1),
        "dense_prefetch_ms_p50": round(float(np.median(dense_ms)), 1),
        "sparse_prefetch_ms_p50": round(float(np.median(sparse_ms)), 1),
        "hybrid_ms_p50": round(float(np.median(hybrid_ms)), 1),
        "hybrid_ms_mean": round(hybrid_total / args.queries, 1),
        "profile_top_cumulative": top,
        "machine": machine(),
        "git": git_rev(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
