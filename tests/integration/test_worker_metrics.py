"""A standalone `perimeter worker` serves its own Prometheus metrics: a real worker subprocess
(prefork, then threads) on real Redis ingests real files, and we scrape /metrics over HTTP."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import docfactory as df
from tests.conftest import REDIS_URL, free_port, redis_available
from tests.integration.test_faults import REPO_ROOT, FaultRig, WorkerProcess

pytestmark = pytest.mark.integration

TOPICS = [
    "glacier retreat in alpine valleys", "railway bridges over tidal rivers",
    "library archives of council minutes", "battery storage for wind turbines",
    "court witnesses in long trials", "harbour dredging and shipping lanes",
]  # fmt: skip


class MetricsWorker(WorkerProcess):
    """`python -m perimeter.cli worker` with a pool, a concurrency and extra options."""

    def __init__(self, env: dict[str, str], log_path: Path, args: list[str]) -> None:
        super().__init__(env, log_path)
        self.args = args

    def start(self) -> MetricsWorker:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "perimeter.cli", "worker", "--loglevel", "INFO",
             "--sweep-interval-s", "3600", *self.args],
            env=self.env,
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        log.close()
        return self


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_scrapeable(worker: WorkerProcess, port: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert worker.proc is not None
        if worker.proc.poll() is not None:
            pytest.fail(f"worker exited:\n{worker.log_text()[-4000:]}")
        try:
            scrape(port)
            return
        except httpx.HTTPError:
            time.sleep(0.3)
    pytest.fail(f"no metrics on {port}:\n{worker.log_text()[-4000:]}")


@pytest.fixture
def rig(tmp_path: Path, shared_embedder: Any) -> Iterator[FaultRig]:
    if not redis_available():
        pytest.fail("Redis is not running on 127.0.0.1:6379")
    rig = FaultRig(tmp_path, REDIS_URL, shared_embedder)
    yield rig
    rig.stop_workers()
    rig.close()


def _files(tmp_path: Path, n: int) -> list[Path]:
    return [
        df.make_txt(
            tmp_path / f"note-{i}.txt",
            [f"Note {i} on {TOPICS[i % len(TOPICS)]}.", f"Paragraph {i}: " + "detail " * 30],
        )
        for i in range(n)
    ]


def _ingest(rig: FaultRig, files: list[Path]) -> tuple[list[str], int]:
    ids = [rig.submit(p) for p in files]
    chunks = 0
    for doc_id in ids:
        doc = rig.wait_status(doc_id, {"indexed", "failed"}, 240)
        assert doc.status.value == "indexed", doc.error
        chunks += doc.chunk_count
    return ids, chunks


def test_prefork_worker_serves_the_metrics_its_child_counted(rig: FaultRig, tmp_path: Path) -> None:
    # The child runs the tasks, the main process serves /metrics: counts cross processes.
    # (One child: local-mode Qdrant lets one process open its folder.)
    port = free_port()
    env = {**rig.worker_env(), "PERIMETER_BROKER__WORKER_METRICS_PORT": str(port)}
    worker = MetricsWorker(
        env, tmp_path / "worker.log", ["--pool", "prefork", "--concurrency", "1"]
    )
    rig.workers.append(worker.start())
    wait_scrapeable(worker, port)

    ids, chunks = _ingest(rig, _files(tmp_path, 3))
    # The document is marked indexed just before the task returns: give the signal a moment.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        samples = scrape(port)
        if value(samples, "perimeter_ingest_tasks_total", outcome="indexed") >= len(ids):
            break
        time.sleep(0.2)
    assert value(samples, "perimeter_documents_indexed_total") == len(ids)
    assert value(samples, "perimeter_chunks_indexed_total") == chunks
    assert value(samples, "perimeter_ingest_tasks_total", outcome="indexed") == len(ids)
    assert value(samples, "perimeter_ingest_task_duration_seconds_count", outcome="indexed") == (
        len(ids)
    )
    assert value(samples, "perimeter_ingest_task_duration_seconds_sum", outcome="indexed") > 0
    assert value(samples, "perimeter_embedding_batch_size_count") == len(ids)
    assert value(samples, "perimeter_embedding_batch_size_sum") == chunks
    # One child embeds one document at a time: model calls = documents, texts = chunks.
    assert value(samples, "perimeter_embedding_model_batch_size_sum") == chunks
    assert value(samples, "perimeter_ingest_tasks_total", outcome="failed") == 0


def test_threads_worker_metrics_and_a_failed_document(rig: FaultRig, tmp_path: Path) -> None:
    port = free_port()
    worker = MetricsWorker(
        rig.worker_env(),
        tmp_path / "worker.log",
        ["--pool", "threads", "--concurrency", "4", "--metrics-port", str(port),
         "--metrics-host", "127.0.0.1"],
    )  # fmt: skip
    rig.workers.append(worker.start())
    wait_scrapeable(worker, port)

    ids, chunks = _ingest(rig, _files(tmp_path, 8))
    # Valid upload, nothing to index (a scan without text): the worker marks it failed.
    bad_id = rig.submit(df.make_image_only_pdf(tmp_path / "scan.pdf"))
    bad = rig.wait_status(bad_id, {"indexed", "failed"}, 120)
    assert bad.status.value == "failed"

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        samples = scrape(port)
        if value(samples, "perimeter_ingest_tasks_total", outcome="failed") >= 1:
            break
        time.sleep(0.2)
    assert value(samples, "perimeter_documents_indexed_total") == len(ids)
    assert value(samples, "perimeter_chunks_indexed_total") == chunks
    assert value(samples, "perimeter_ingest_tasks_total", outcome="indexed") == len(ids)
    assert value(samples, "perimeter_ingest_tasks_total", outcome="failed") == 1
    assert value(samples, "perimeter_ingest_task_duration_seconds_count", outcome="failed") == 1
    # Micro-batching: every text went through the model; never in more calls than documents.
    assert value(samples, "perimeter_embedding_model_batch_size_sum") == chunks
    model_calls = value(samples, "perimeter_embedding_model_batch_size_count")
    assert 1 <= model_calls <= value(samples, "perimeter_embedding_batch_size_count")


def test_no_metrics_server_unless_a_port_is_set(rig: FaultRig, tmp_path: Path) -> None:
    from tests.integration.test_faults import _port_open

    port = free_port()
    worker = MetricsWorker(
        rig.worker_env(), tmp_path / "worker.log", ["--pool", "solo", "--concurrency", "1"]
    )
    rig.workers.append(worker.start())
    _ingest(rig, _files(tmp_path, 1))
    assert "worker metrics on" not in worker.log_text()
    assert not _port_open(port)
