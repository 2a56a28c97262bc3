"""Zero-downtime re-index of 1,400 CISI documents while questions and uploads continue.

    .venv/bin/python -m bench.reindex_live                 # 1,400 documents (the issue's target)
    .venv/bin/python -m bench.reindex_live --docs 200      # quicker

The stack is the embedded default in one process (Qdrant Edge, SQLite metadata) with a real
Celery worker on Redis (loopback) ingesting, and the FastAPI app served in-process. The "new
model" is the packaged MiniLM with another chunking (100-token chunks instead of 200): the only
second model that ships is the same MiniLM, and a chunking change re-embeds every chunk just as
a model change does (tests/integration/test_reindex.py covers a model of another dimension).

While the copy runs: one client asks retrieval-only questions back to back (CISI's queries),
50 documents are uploaded and 50 deleted; 20 more are uploaded right before the switch. The
run checks that every indexed document, and nothing else, is in the new collection.

Prints one JSON line; BENCHMARKS.md quotes it.
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

from bench.common import cisi_queries, git_rev, machine, peak_rss_mib, summary, write_corpus


class Asker:
    def __init__(self, client: Any, questions: list[str]) -> None:
        self._client = client
        self._questions = questions
        self.latencies: dict[str, list[float]] = {}
        self.failures: list[str] = []
        self.abstained = 0
        self.phase = "before"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            q = self._questions[i % len(self._questions)]
            i += 1
            t0 = time.perf_counter()
            try:
                r = self._client.post("/v1/query", json={"question": q, "retrieval_only": True})
                if r.status_code != 200:
                    self.failures.append(f"{r.status_code} {r.text[:200]}")
                elif not r.json()["sources"]:
                    # An answer all the same: below min_dense_score the service abstains.
                    self.abstained += 1
            except Exception as exc:
                self.failures.append(repr(exc))
            self.latencies.setdefault(self.phase, []).append((time.perf_counter() - t0) * 1000)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)


def upload(client: Any, paths: list[Path]) -> list[str]:
    ids: list[str] = []
    for start in range(0, len(paths), 20):
        group = paths[start : start + 20]
        handles = [p.open("rb") for p in group]
        try:
            files = [
                ("files", (p.name, h, "text/plain")) for p, h in zip(group, handles, strict=True)
            ]
            r = client.post("/v1/documents", files=files)
        finally:
            for h in handles:
                h.close()
        assert r.status_code == 202, r.text
        ids += [d["document_id"] for d in r.json()["documents"]]
    return ids


def wait_indexed(services: Any, ids: list[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    pending = set(ids)
    while pending and time.monotonic() < deadline:
        for doc_id in list(pending):
            doc = services.metadata.get_document_any_tenant(doc_id)
            if doc is not None and doc.status.value in ("indexed", "failed"):
                pending.discard(doc_id)
        time.sleep(0.5)
    if pending:
        raise TimeoutError(f"{len(pending)} documents not indexed in {timeout_s:.0f}s")


def wait_state(client: Any, job_id: str, state: str, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body: dict[str, Any] = client.get(f"/v1/admin/reindex/{job_id}").json()
        if body["state"] == state:
            return body
        if body["error"]:
            raise RuntimeError(body["error"])
        time.sleep(0.5)
    raise TimeoutError(f"re-index not {state} in {timeout_s:.0f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=1400)
    parser.add_argument("--chunk-max-tokens", type=int, default=100)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/14")
    args = parser.parse_args()

    from fastapi.testclient import TestClient

    from perimeter.api.app import create_app
    from perimeter.backends.reindex_state import Generation
    from perimeter.composition import build_services
    from perimeter.settings import Settings
    from perimeter.workers.embedded import EmbeddedWorker
    from perimeter.workers.tasks import create_worker_app

    tmp = Path(tempfile.mkdtemp(prefix="bench-reindex-"))
    corpus = write_corpus(tmp / "corpus")
    extra = write_corpus(tmp / "extra", copies=2)[len(corpus) : len(corpus) + 70]
    first_paths = corpus[: args.docs]
    suffix = uuid.uuid4().hex[:8]
    settings = Settings(
        storage={"data_dir": tmp / "data"},
        broker={"url": args.redis, "queue": f"perimeter.bench.{suffix}"},
        llm={"base_url": "http://127.0.0.1:9/v1", "max_retries": 0},
    )
    services = build_services(settings)
    services.ensure_ready()
    celery_app, _ = create_worker_app(settings, services)
    worker = EmbeddedWorker(celery_app, settings.broker.queue, concurrency=8)
    worker.start()
    out: dict[str, Any] = {"bench": "reindex_live", "docs": args.docs, "machine": machine()}
    try:
        with TestClient(create_app(services=services)) as client:
            t0 = time.perf_counter()
            first = upload(client, first_paths)
            wait_indexed(services, first, 1800)
            out["initial_ingest_s"] = round(time.perf_counter() - t0, 1)
            out["chunks_before"] = services.store.count_all()  # type: ignore[attr-defined]

            asker = Asker(client, cisi_queries())
            asker.start()
            time.sleep(5)
            asker.phase = "during"
            t1 = time.perf_counter()
            r = client.post("/v1/admin/reindex", json={"chunk_max_tokens": args.chunk_max_tokens})
            assert r.status_code == 202, r.text
            job = r.json()
            during = upload(client, extra[:50])
            deleted = first[:50]
            for doc_id in deleted:
                assert client.delete(f"/v1/documents/{doc_id}").status_code == 204
            ready = wait_state(client, job["id"], "ready", 3600)
            out["copy_s"] = round(time.perf_counter() - t1, 1)
            late = upload(client, extra[50:70])
            t2 = time.perf_counter()
            r = client.post(f"/v1/admin/reindex/{job['id']}/switch")
            assert r.status_code == 200, r.text
            out["switch_ms"] = round((time.perf_counter() - t2) * 1000, 1)
            asker.phase = "after"
            wait_indexed(services, during + late, 600)
            time.sleep(5)
            asker.stop()

            indexed = {
                d.id
                for d in services.metadata.list_documents("default", limit=100_000)
                if d.status.value == "indexed"
            }
            target = services.profiles.generation(
                Generation(job["target"]["collection"], "default", args.chunk_max_tokens, None)
            ).store
            in_new = {d for _t, d in target.document_ids()}  # type: ignore[attr-defined]
            expected = (set(first) - set(deleted)) | set(during) | set(late)
            out.update(
                {
                    "copied_documents": ready["documents_done"],
                    "failed_documents": ready["documents_failed"],
                    "indexed_documents": len(indexed),
                    "expected_documents": len(expected),
                    "in_new_collection": len(in_new),
                    "missing_from_new": len(indexed - in_new),
                    "extra_in_new": len(in_new - indexed),
                    "chunks_after": target.count_all(),  # type: ignore[attr-defined]
                    "copy_docs_per_s": round(ready["documents_done"] / out["copy_s"], 1),
                    "questions": sum(len(v) for v in asker.latencies.values()),
                    "failed_questions": len(asker.failures),
                    "abstained_questions": asker.abstained,
                    "failures_sample": asker.failures[:3],
                    "latency_ms": {k: summary(v) for k, v in asker.latencies.items()},
                    "peak_rss_mib": round(peak_rss_mib(), 0),
                    "git": git_rev(),
                }
            )
    finally:
        worker.stop()
        services.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
