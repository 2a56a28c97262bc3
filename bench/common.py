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


def write_corpus(folder: Path, limit: int | None = None) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for doc_id, text in cisi_records(limit):
        p = folder / f"cisi-{doc_id}.txt"
        p.write_text(text, encoding="utf-8")
        paths.append(p)
    return paths


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


# -- a stack served over HTTP from a child process ---------------------------------------------
def _serve(settings_json: str, port: int, worker_concurrency: int, ready: Any) -> None:
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
    worker = None
    if worker_concurrency > 0:
        celery_app, _ = create_worker_app(settings, services)
        worker = EmbeddedWorker(celery_app, settings.broker.queue, worker_concurrency)
        worker.start()
    config = uvicorn.Config(
        create_app(services=services), host="127.0.0.1", port=port, log_level="warning"
    )
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

    def __init__(self, settings: Any, worker_concurrency: int = 1) -> None:
        self.settings = settings
        self.port = free_port()
        self.worker_concurrency = worker_concurrency
        self._ctx = mp.get_context("spawn")
        self.proc: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServedStack:
        ready = self._ctx.Event()
        self.proc = self._ctx.Process(
            target=_serve,
            args=(self.settings.model_dump_json(), self.port, self.worker_concurrency, ready),
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
