"""Shared bench helpers: the CISI corpus as files, a stack served over real HTTP, stats.

The server runs in a child process (spawned, not forked), so the load generator in the parent
never competes with it for the GIL, and only the child opens the local-mode Qdrant folder.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import platform
import resource
import socket
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

CISI_DIR = Path(os.environ.get("PERIMETER_CISI_DIR", "/work/shared/data/cisi"))


def cisi_records(limit: int | None = None) -> list[tuple[str, str]]:
    """(doc id, text) for CISI.ALL: title, then the abstract."""
    from perimeter.eval.smart import parse_smart

    text = (CISI_DIR / "CISI.ALL").read_text(encoding="latin-1")
    out = []
    for rec in parse_smart(text)[:limit]:
        body = rec.get("W")
        if body.strip():
            out.append((rec.id, f"{rec.get('T')}\n\n{body}\n"))
    return out


def cisi_queries() -> list[str]:
    from perimeter.eval.smart import parse_smart

    text = (CISI_DIR / "CISI.QRY").read_text(encoding="latin-1")
    return [q.get("W") or q.get("T") for q in parse_smart(text)]


def write_corpus(folder: Path, limit: int | None = None, copies: int = 1) -> list[Path]:
    """CISI abstracts as .txt files. ``copies`` > 1 writes the corpus that many times, each copy
    headed by its own line, so every file has its own content hash (a distinct document) and
    the corpus grows to any size with the same text statistics."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for copy in range(copies):
        for doc_id, text in cisi_records(limit):
            name = f"cisi-{doc_id}.txt" if copies == 1 else f"cisi-{doc_id}-copy{copy}.txt"
            p = folder / name
            p.write_text(text if copies == 1 else f"Copy {copy}.\n\n{text}", encoding="utf-8")
            paths.append(p)
    return paths


def populate(
    settings: Any, target: int, have: int, base: tuple[list[str], np.ndarray, list[Any]]
) -> int:
    """Grow the default collection of ``settings`` from ``have`` to ``target`` points: ``base``'s
    (texts, dense vectors, sparse vectors) cycled, each dense vector past the first copy moved by
    small Gaussian noise. Four chunks per synthetic document ``bench-N``; returns the count."""
    from perimeter.composition import build_services
    from perimeter.domain import ChunkRecord, point_id_for

    texts, dense, sparse = base
    services = build_services(settings)
    services.ensure_ready()
    rng = np.random.default_rng(have)
    batch: list[ChunkRecord] = []
    for i in range(have, target):
        j = i % len(texts)
        vec = dense[j] if i < len(texts) else dense[j] + rng.normal(0, 0.02, dense.shape[1])
        vec = vec / np.linalg.norm(vec)
        doc_id = f"bench-{i // 4}"
        batch.append(
            ChunkRecord(
                point_id=point_id_for(doc_id, i % 4),
                tenant_id="default",
                document_id=doc_id,
                chunk_index=i % 4,
                text=texts[j],
                filename=f"{doc_id}.txt",
                page=None,
                section=None,
                dense=vec.astype(np.float32).tolist(),
                sparse=sparse[j],
            )
        )
        if len(batch) == 1024:
            services.store.upsert(batch)
            batch = []
    if batch:
        services.store.upsert(batch)
    count = services.store.count_all()
    services.close()
    return count


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50": percentile(values, 0.50),
        "p95": percentile(values, 0.95),
        "p99": percentile(values, 0.99),
        "mean": statistics.fmean(values) if values else float("nan"),
    }


def peak_rss_mib(children: bool = False) -> float:
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss / 1024  # Linux reports KiB


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    import torch

    return (
        f"{cpu}, {os.cpu_count()} CPUs, torch {torch.__version__} threads "
        f"{torch.get_num_threads()}, Python {platform.python_version()}, "
        f"1-min load at start {load:.1f}"
    )


def git_rev() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except Exception:
        return "unknown"


# -- per-stage timings of the ingestion path (bench only) -----------------------------------------
class StageTimer:
    """Wall time, thread CPU time and calls per stage, summed over every thread: a profile of
    where an ingestion task spends its time that works across the worker's threads (cProfile sees
    one thread only)."""

    def __init__(self) -> None:
        import threading

        self._lock = threading.Lock()
        self.stages: dict[str, list[float]] = {}

    def wrap(self, obj: Any, method: str, stage: str) -> None:
        original = getattr(obj, method)

        def timed(*args: Any, **kwargs: Any) -> Any:
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
                with self._lock:
                    row = self.stages.setdefault(stage, [0.0, 0.0, 0.0])
                    row[0] += wall
                    row[1] += cpu
                    row[2] += 1

        setattr(obj, method, timed)

    def report(self) -> dict[str, dict[str, float]]:
        with self._lock:
            return {
                k: {"wall_s": round(w, 2), "thread_cpu_s": round(c, 2), "calls": int(n)}
                for k, (w, c, n) in sorted(self.stages.items())
            }


def instrument(services: Any, timer: StageTimer) -> None:
    """Time each stage of IngestionService.process on these services' objects (instance
    attributes shadow the methods, so every holder of the object sees the timed version)."""
    from perimeter.backends.micro_batching import MicroBatchingEmbedder

    timer.wrap(services.ingestion, "process", "task total (IngestionService.process)")
    timer.wrap(services.parser, "parse", "parse (unstructured)")
    embedder = services.embedder
    timer.wrap(embedder, "count_tokens", "chunking: count_tokens")
    if isinstance(embedder, MicroBatchingEmbedder):
        timer.wrap(embedder, "encode_documents", "embed: per document, incl. queueing")
        timer.wrap(embedder.inner, "encode_documents", "embed: model calls")
    else:
        timer.wrap(embedder, "encode_documents", "embed: model calls")
    if services.sparse_encoder is not None:
        timer.wrap(services.sparse_encoder, "encode_documents", "sparse: BM25 encode")
    for method in ("upsert", "delete_document_tail", "count_document"):
        timer.wrap(services.store, method, f"qdrant: {method}")
    for method in ("get_document_any_tenant", "record_attempt", "set_status", "set_job_progress"):
        timer.wrap(services.metadata, method, f"sql: {method}")


def thread_cpu_s() -> dict[str, float]:
    """CPU seconds of this process's live threads, grouped by Python thread name (numbered pool
    threads collapsed); threads Python does not know (torch's OpenMP pool) are one group."""
    import re
    import threading
    from collections import defaultdict

    names = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = defaultdict(float)
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = names.get(int(task.name), "native threads (torch intra-op pool, ...)")
        out[re.sub(r"[-_ ]?\d+(_\d+)?$", "", name)] += (int(fields[11]) + int(fields[12])) / tick
    return {k: round(v, 1) for k, v in sorted(out.items(), key=lambda kv: -kv[1])}


# -- a stack served over HTTP from a child process ---------------------------------------------
def _serve(
    settings_json: str, port: int, worker_concurrency: int, ready: Any, stages: bool = False
) -> None:
    import logging

    import uvicorn

    from perimeter.api.app import create_app
    from perimeter.composition import build_services
    from perimeter.settings import Settings
    from perimeter.workers.embedded import EmbeddedWorker
    from perimeter.workers.tasks import create_worker_app

    logging.basicConfig(level=logging.WARNING)
    settings = Settings.model_validate_json(settings_json)
    services = build_services(settings)
    services.ensure_ready()
    services.embedder.warm_up()
    timer = StageTimer()
    if stages:
        instrument(services, timer)
    worker = None
    if worker_concurrency > 0:
        celery_app, _ = create_worker_app(settings, services)
        worker = EmbeddedWorker(celery_app, settings.broker.queue, worker_concurrency)
        worker.start()
    app = create_app(services=services)

    def bench_stats() -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "stages": timer.report(),
            "process_cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "thread_cpu_s": thread_cpu_s(),
        }

    app.add_api_route("/_bench/stats", bench_stats, methods=["GET"])
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    ready.set()
    try:
        server.run()
    finally:
        if worker is not None:
            worker.stop()
        services.close()


class ServedStack:
    """API + embedded worker (threads) in a spawned child process, on a free port."""

    def __init__(self, settings: Any, worker_concurrency: int = 1, stages: bool = False) -> None:
        self.settings = settings
        self.port = free_port()
        self.worker_concurrency = worker_concurrency
        self.stages = stages
        self._ctx = mp.get_context("spawn")
        self.proc: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServedStack:
        ready = self._ctx.Event()
        self.proc = self._ctx.Process(
            target=_serve,
            args=(
                self.settings.model_dump_json(),
                self.port,
                self.worker_concurrency,
                ready,
                self.stages,
            ),
            daemon=True,
        )
        self.proc.start()
        if not ready.wait(300):
            raise RuntimeError("bench server did not start")
        import httpx

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("bench server not answering")

    def stats(self) -> dict[str, Any]:
        """Stage timings (when started with stages=True) and the server's CPU seconds so far."""
        import httpx

        return dict(httpx.get(self.url + "/_bench/stats", timeout=30).json())

    def rss_mib(self) -> float:
        """Peak RSS of the server process (VmHWM), read while it runs."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(30)
            if self.proc.is_alive():
                self.proc.kill()
