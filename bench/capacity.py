"""The measurements behind the capacity model (docs/operations.md, "Capacity model").

    .venv/bin/python -m bench.capacity                    # 2,000 points, the shipped defaults
    .venv/bin/python -m bench.capacity --points 50000

Measured here, on CISI chunked with the shipped chunking (200 tokens, 40 overlap):

- per chunk: payload bytes as stored (JSON of the payload the adapters write), sparse (BM25)
  non-zeros, and the disk the embedded engine (Qdrant Edge) uses per point with MiniLM's 384-d
  vectors, from its shard folder after ``--points`` points;
- throughput: MiniLM document embedding (chunks/s, one model call of 32 texts at a time, all
  cores), question embedding (ms), and exact hybrid search at ``--points`` points (ms): the
  three costs a node and a worker spend per chunk and per question.

Vector and HNSW bytes per million chunks are arithmetic on the dimensions (float32: 4 bytes a
dimension, scalar int8: 1, HNSW links: m=16 -> 2m ids of 4 bytes at level 0, ~1/m of the points
on higher levels); the doc states that and what it assumes for GPU hosts. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import cisi_queries, cisi_records, git_rev, machine


def _stage(what: str, n: int) -> None:
    # Progress on stderr: on a contended box a stage can take minutes.
    print(f"[capacity] {time.strftime('%H:%M:%S')} {what}: {n}", file=sys.stderr, flush=True)


def _folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=int, default=2_000)
    parser.add_argument("--searches", type=int, default=50)
    args = parser.parse_args()

    from perimeter.backends.bm25_sparse import Bm25SparseEncoder
    from perimeter.backends.qdrant_edge_store import QdrantEdgeChunkStore, _payload
    from perimeter.backends.sentence_transformer_embedder import SentenceTransformerEmbedder
    from perimeter.domain import ChunkRecord, ParsedElement, SearchFilter, point_id_for
    from perimeter.ingest.chunking import chunk_elements
    from perimeter.settings import Settings

    s = Settings()
    embedder = SentenceTransformerEmbedder(s.embedding.model)
    embedder.warm_up()
    sparse = Bm25SparseEncoder(
        k1=s.retrieval.bm25_k1, b=s.retrieval.bm25_b, avg_len=s.retrieval.bm25_avg_len
    )

    texts: list[str] = []
    for _doc_id, text in cisi_records():
        elements = [ParsedElement(p, "NarrativeText") for p in text.split("\n\n") if p.strip()]
        for c in chunk_elements(
            elements, embedder.count_tokens, s.chunking.max_tokens, s.chunking.overlap_tokens
        ):
            texts.append(c.text)
    sparse_vecs = sparse.encode_documents(texts)
    _stage("chunked and BM25-encoded", len(texts))

    # Embedding throughput: 512 chunks, batches of 32 (the shipped batch size).
    sample = texts[:512]
    embedder.encode_documents(sample[:32])
    t0 = time.perf_counter()
    sample_dense: list[list[float]] = []
    for i in range(0, len(sample), 32):
        sample_dense += [e.dense for e in embedder.encode_documents(sample[i : i + 32])]
    embed_chunks_per_s = len(sample) / (time.perf_counter() - t0)
    _stage("embedded the sample", len(sample))
    questions = cisi_queries()[:50]
    t0 = time.perf_counter()
    qvecs = [embedder.encode_queries([q])[0] for q in questions]
    query_embed_ms = (time.perf_counter() - t0) * 1000 / len(questions)

    # Store: --points points in an Edge shard (CISI texts and BM25 vectors cycled, the 512
    # sampled MiniLM vectors cycled with noise around them: the store's cost depends on count and
    # shape, not meaning).
    dense = np.asarray(sample_dense, dtype=np.float32)
    root = Path(tempfile.mkdtemp(prefix="bench-capacity-"))
    store = QdrantEdgeChunkStore("capacity", root=root, rrf_k=s.retrieval.rrf_k)
    store.ensure_collection(embedder.dimension, sparse_idf=sparse.uses_idf_modifier)
    rng = np.random.default_rng(0)
    payload_bytes: list[int] = []
    batch: list[ChunkRecord] = []
    t0 = time.perf_counter()
    for i in range(args.points):
        j = i % len(texts)
        d = i % len(dense)
        vec = dense[d] if i < len(dense) else dense[d] + rng.normal(0, 0.02, dense.shape[1])
        vec = vec / np.linalg.norm(vec)
        doc_id = f"doc-{i // 4}"
        rec = ChunkRecord(
            point_id=point_id_for(doc_id, i % 4),
            tenant_id=f"tenant-{i % 10}",
            document_id=doc_id,
            chunk_index=i % 4,
            text=texts[j],
            filename=f"{doc_id}.pdf",
            page=1 + i % 30,
            section="Introduction",
            dense=vec.astype(np.float32).tolist(),
            sparse=sparse_vecs[j],
            metadata={"department": "legal", "year": 2024},
        )
        if i < len(texts):
            payload_bytes.append(len(json.dumps(_payload(rec)).encode()))
        batch.append(rec)
        if len(batch) == 512:
            store.upsert(batch)
            batch = []
    if batch:
        store.upsert(batch)
    upsert_points_per_s = args.points / (time.perf_counter() - t0)
    _stage("upserted", args.points)
    store.flush()

    latencies = []
    for k in range(args.searches):
        enc = qvecs[k % len(qvecs)]
        q_sparse = sparse.encode_queries([questions[k % len(questions)]])[0]
        t0 = time.perf_counter()
        store.hybrid_search(enc.dense, q_sparse, SearchFilter(tenant_id=f"tenant-{k % 10}"), 5, 50)
        latencies.append((time.perf_counter() - t0) * 1000)
    store.close()
    disk = _folder_bytes(root / "capacity")

    nnz = [len(v.indices) for v in sparse_vecs]
    out: dict[str, Any] = {
        "bench": "capacity",
        "points": args.points,
        "cisi_chunks": len(texts),
        "payload_bytes_per_chunk_mean": round(statistics.fmean(payload_bytes)),
        "sparse_nnz_per_chunk_mean": round(statistics.fmean(nnz), 1),
        "edge_disk_bytes_per_point": round(disk / args.points),
        "minilm_embed_chunks_per_s": round(embed_chunks_per_s, 1),
        "minilm_query_embed_ms": round(query_embed_ms, 1),
        "edge_upsert_points_per_s": round(upsert_points_per_s),
        "edge_hybrid_search_ms": {
            "p50": round(float(np.percentile(latencies, 50)), 2),
            "p95": round(float(np.percentile(latencies, 95)), 2),
        },
        "cpus": os.cpu_count(),
        "machine": machine(),
        "git": git_rev(),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
