"""Query latency over HTTP (retrieval only): p50/p95/p99 and req/s with 1, 8 and 32 concurrent
clients, at one or more collection sizes, with the retrieval overhead (latency minus the query
encoder's forward time, which the server reports as ``timings.embed_ms``).

    .venv/bin/python -m bench.query_latency --sizes 10000 50000 --seconds 20

The collection holds the CISI chunks embedded once with the real embedder (dense + BM25
sparse), then replicated with small Gaussian noise on the dense vector up to each size: both
embedded stores search exactly (brute force), so the cost depends on the number of points, not
on their text. ``--embedded local`` measures qdrant-client local mode for comparison.
Prints one JSON line; ``--plot docs/benchmarks-query-latency.png`` draws p50/p95 against size.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.common import (
    ServedStack,
    cisi_queries,
    cisi_records,
    free_port,
    git_rev,
    machine,
    populate,
    summary,
)


def base_records(settings: Any) -> tuple[list[str], np.ndarray, list[Any]]:
    from perimeter.backends.bm25_sparse import Bm25SparseEncoder
    from perimeter.backends.sentence_transformer_embedder import SentenceTransformerEmbedder
    from perimeter.domain import ParsedElement
    from perimeter.ingest.chunking import chunk_elements

    embedder = SentenceTransformerEmbedder(settings.embedding.model)
    texts: list[str] = []
    for _doc_id, text in cisi_records():
        paragraphs = [t for t in text.split("\n\n") if t.strip()]
        elements = [ParsedElement(text=t, category="NarrativeText") for t in paragraphs]
        chunks = chunk_elements(elements, embedder.count_tokens, 200, 40)
        texts.extend(c.text for c in chunks)
    dense = np.asarray(
        embedder.model.encode(texts, batch_size=32, normalize_embeddings=True), dtype=np.float32
    )
    sparse = Bm25SparseEncoder().encode_documents(texts)
    return texts, dense, sparse


def load(
    url: str, questions: list[str], clients: int, seconds: float, answers: bool = False
) -> dict[str, Any]:
    """``answers``: full answers (the LLM writes each one); else retrieval only."""
    latencies: list[float] = []
    embed_ms: list[float] = []
    search_ms: list[float] = []
    llm_ms: list[float] = []
    errors = 0
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def run(k: int) -> None:
        nonlocal errors
        with httpx.Client(base_url=url, timeout=120) as client:
            n = k
            while time.monotonic() < stop_at:
                q = questions[n % len(questions)]
                n += clients
                t0 = time.perf_counter()
                r = client.post("/v1/query", json={"question": q, "retrieval_only": not answers})
                dt = (time.perf_counter() - t0) * 1000
                with lock:
                    if r.status_code != 200:
                        errors += 1
                        continue
                    latencies.append(dt)
                    timings = r.json()["timings"]
                    embed_ms.append(timings["embed_ms"])
                    search_ms.append(timings["search_ms"])
                    # An abstention (nothing relevant) calls no LLM: 0 ms of it.
                    llm_ms.append(timings.get("llm_ms", 0.0))

    started = time.monotonic()
    threads = [threading.Thread(target=run, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - started
    # Overhead: everything but the model forward passes (query encoder and, for answers, LLM).
    overhead = [lat - e - m for lat, e, m in zip(latencies, embed_ms, llm_ms, strict=True)]

    def r2(d: dict[str, float]) -> dict[str, float]:
        return {k: round(v, 1) for k, v in d.items()}

    result = {
        "clients": clients,
        "mode": "answers" if answers else "retrieval_only",
        "requests": len(latencies),
        "errors": errors,
        "req_per_s": round(len(latencies) / wall, 2),
        "latency_ms": r2(summary(latencies)),
        "encoder_forward_ms": r2(summary(embed_ms)),
        "search_ms": r2(summary(search_ms)),
        "overhead_ms": r2(summary(overhead)),
    }
    if answers:
        result["llm_ms"] = r2(summary(llm_ms))
        result["answered_by_llm"] = sum(1 for m in llm_ms if m > 0)
    return result


def plot(results: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    retrieval = [lv for r in results for lv in r["levels"] if lv["mode"] == "retrieval_only"]
    for clients in sorted({lv["clients"] for lv in retrieval}):
        sizes, p50, p95 = [], [], []
        for r in results:
            for lv in r["levels"]:
                if lv["clients"] == clients and lv["mode"] == "retrieval_only":
                    sizes.append(r["points"])
                    p50.append(lv["latency_ms"]["p50"])
                    p95.append(lv["latency_ms"]["p95"])
        ax.plot(sizes, p50, marker="o", label=f"p50, {clients} clients")
        ax.plot(sizes, p95, marker="x", linestyle="--", label=f"p95, {clients} clients")
    ax.set_xlabel("points in the collection (embedded store, exact search)")
    ax.set_ylabel("latency (ms), retrieval only, over HTTP")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000])
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--plot", type=Path, default=None)
    ap.add_argument(
        "--answers",
        action="store_true",
        help="also measure full answers with the packaged SmolLM2 (llama-cpp-python server)",
    )
    ap.add_argument(
        "--answer-clients", type=int, nargs="+", default=[1, 8], help="client levels for answers"
    )
    ap.add_argument(
        "--embedded",
        choices=["edge", "local"],
        default="edge",
        help="embedded vector store (qdrant.embedded): Qdrant Edge (default) or local mode",
    )
    ap.add_argument(
        "--torch-threads",
        type=int,
        default=0,
        help="the server's torch threads per model call (PERIMETER_EMBEDDING__TORCH_THREADS)",
    )
    ap.add_argument(
        "--query-batching",
        choices=["on", "off"],
        default="on",
        help="coalesce concurrent questions into shared model calls "
        "(PERIMETER_EMBEDDING__MICRO_BATCH_QUERIES; on is the shipped default)",
    )
    args = ap.parse_args()

    from perimeter.settings import Settings

    llm_server = None
    llm_url = "http://127.0.0.1:9/v1"  # retrieval only: no LLM may be called
    if args.answers:
        from perimeter.backends.llama_server import LlamaServer
        from perimeter.backends.model_paths import default_gguf_path

        llm_server = LlamaServer(
            default_gguf_path(), port=free_port(), model_alias="smollm2-135m-instruct"
        )
        llm_server.start()
        llm_url = llm_server.base_url
    tmp = Path(tempfile.mkdtemp(prefix="perimeter-bench-query-"))
    settings = Settings(
        storage={"data_dir": tmp / "data"},
        broker={"url": "redis://127.0.0.1:6379/14", "queue": f"bench.{uuid.uuid4().hex[:8]}"},
        llm={"base_url": llm_url, "model": "smollm2-135m-instruct"},
        embedding={
            "torch_threads": args.torch_threads,
            "micro_batch_queries": args.query_batching == "on",
        },
        qdrant={"embedded": args.embedded},
    )
    questions = cisi_queries()
    base = base_records(settings)
    out: dict[str, Any] = {
        "machine": machine(),
        "git": git_rev(),
        "base_chunks": len(base[0]),
        "torch_threads": args.torch_threads,
        "embedded": args.embedded,
    }
    results = []
    have = 0
    for size in sorted(args.sizes):
        have = populate(settings, size, have, base)
        with ServedStack(settings, worker_concurrency=0) as stack:
            # Warm: the first queries load code paths and caches.
            load(stack.url, questions, 1, 2)
            levels = [load(stack.url, questions, c, args.seconds) for c in args.clients]
            if args.answers:
                levels += [
                    load(stack.url, questions, c, args.seconds, answers=True)
                    for c in args.answer_clients
                ]
            rss = stack.rss_mib()
        results.append({"points": have, "server_peak_rss_mib": round(rss, 1), "levels": levels})
        print(json.dumps(results[-1]), flush=True)
    out["results"] = results
    if llm_server is not None:
        llm_server.stop()
    print(json.dumps(out))
    if args.plot is not None and len(results) >= 2:
        plot(results, args.plot)


if __name__ == "__main__":
    main()
