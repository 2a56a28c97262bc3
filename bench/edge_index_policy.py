"""Exact search or HNSW on Qdrant Edge? Recall@10 and latency on real MiniLM embeddings of CISI.

    .venv/bin/python -m bench.edge_index_policy --copies 1

The CISI chunks (real MiniLM dense vectors) go into two Edge shards: one left as written (plain
segments, exact search: what the embedded store does) and one optimised into HNSW (m=16,
ef_construct=100, full_scan_threshold lowered so the graph is really used at this size). Each
CISI question is asked unfiltered and with a tenant filter that keeps ~20 % of the points;
recall@10 is HNSW's overlap with the exact top-10. ``--copies N`` replicates the corpus N times
with small noise on the dense vectors (more points; the optimise time grows with them and holds
the GIL all along). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import cisi_queries, git_rev, machine, summary

TENANTS = 5


def _shard(path: Path, dim: int, hnsw: bool) -> Any:
    import qdrant_edge as qe

    config = qe.EdgeConfig(
        vectors={"dense": qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine)},
        hnsw_config=qe.HnswIndexConfig(m=16, ef_construct=100, full_scan_threshold=10)
        if hnsw
        else None,
        optimizers=qe.EdgeOptimizersConfig(indexing_threshold=1) if hnsw else None,
    )
    shard = qe.EdgeShard.create(str(path), config)
    shard.update(
        qe.UpdateOperation.create_field_index("scope", qe.KeywordIndexParams(is_tenant=True))
    )
    return shard


def _top(shard: Any, vec: list[float], flt: Any, exact: bool, ef: int | None) -> list[str]:
    import qdrant_edge as qe

    req = qe.QueryRequest(
        limit=10,
        query=qe.Query.Nearest(vec, using="dense"),
        filter=flt,
        params=qe.SearchParams(exact=exact, hnsw_ef=ef),
    )
    return [str(p.id) for p in shard.query(req)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--copies", type=int, default=1)
    ap.add_argument("--ef", type=int, nargs="+", default=[0, 128, 256])
    args = ap.parse_args()

    import qdrant_edge as qe

    from bench.query_latency import base_records
    from perimeter.backends.sentence_transformer_embedder import SentenceTransformerEmbedder
    from perimeter.settings import Settings

    settings = Settings()
    _texts, dense, _sparse = base_records(settings)
    embedder = SentenceTransformerEmbedder(settings.embedding.model)
    questions = cisi_queries()
    queries = [e.dense for e in embedder.encode_queries(questions)]
    rng = np.random.default_rng(0)
    vectors = [dense] + [
        dense + rng.normal(0, 0.02, dense.shape).astype(np.float32) for _ in range(args.copies - 1)
    ]
    allv = np.concatenate(vectors)
    allv = allv / np.linalg.norm(allv, axis=1, keepdims=True)

    tmp = Path(tempfile.mkdtemp(prefix="perimeter-bench-hnsw-"))
    out: dict[str, Any] = {"machine": machine(), "git": git_rev(), "points": len(allv)}
    try:
        shards = {"exact": _shard(tmp / "exact", allv.shape[1], False)}
        shards["hnsw"] = _shard(tmp / "hnsw", allv.shape[1], True)
        for shard in shards.values():
            for start in range(0, len(allv), 1024):
                points = [
                    qe.Point(
                        str(uuid.uuid5(uuid.NAMESPACE_OID, str(i))),
                        {"dense": allv[i].tolist()},
                        {"scope": f"t{i % TENANTS}/default"},
                    )
                    for i in range(start, min(start + 1024, len(allv)))
                ]
                shard.update(qe.UpdateOperation.upsert_points(points))
        t0 = time.perf_counter()
        shards["hnsw"].optimize()
        out["optimize_s"] = round(time.perf_counter() - t0, 2)
        out["hnsw_indexed_vectors"] = shards["hnsw"].info().indexed_vectors_count
        filters = {
            "unfiltered": None,
            "tenant_20pct": qe.Filter(
                must=[qe.FieldCondition(key="scope", match=qe.MatchValue("t1/default"))]
            ),
        }
        for fname, flt in filters.items():
            truth = [_top(shards["exact"], q, flt, True, None) for q in queries]
            t_exact = []
            for q in queries:
                t0 = time.perf_counter()
                _top(shards["exact"], q, flt, True, None)
                t_exact.append((time.perf_counter() - t0) * 1000)
            row: dict[str, Any] = {
                "exact_ms": {k: round(v, 3) for k, v in summary(t_exact).items()}
            }
            for ef in args.ef:
                lat, recall = [], []
                for q, want in zip(queries, truth, strict=True):
                    t0 = time.perf_counter()
                    got = _top(shards["hnsw"], q, flt, False, ef or None)
                    lat.append((time.perf_counter() - t0) * 1000)
                    recall.append(len(set(got) & set(want)) / max(1, len(want)))
                row[f"hnsw_ef{ef or 'default'}"] = {
                    "recall_at_10": round(float(np.mean(recall)), 4),
                    "min_recall": round(float(np.min(recall)), 2),
                    "ms": {k: round(v, 3) for k, v in summary(lat).items()},
                }
            out[fname] = row
        for shard in shards.values():
            shard.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
