"""Prometheus metrics, one registry per app (no module-level collectors: two apps in one process,
as in the tests, never share or double-register series).

What is counted where:

* request latency: the API middleware, labelled by route *template* (``/v1/documents/{id}``,
  never the raw path, which would make one series per document) and status;
* documents by status and ingestion queue depth: computed at scrape time from the metadata DB and
  the broker, so they are right even when the worker is another process;
* chunks indexed and embedding batch sizes: observed by the ingestion service in the process that
  runs it. Under `perimeter up` that is the API process; a separate `perimeter worker` counts its
  own and serves them itself (``WorkerMetrics``, ``PERIMETER_BROKER__WORKER_METRICS_PORT``), with
  its task durations and outcomes;
* LLM time to first token (streamed answers) and tokens/s: observed by the query route.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from perimeter.domain import DocumentStatus

if TYPE_CHECKING:
    from perimeter.composition import Services

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
TOKENS_PER_S_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
KNOWN_STATUSES = tuple(status.value for status in DocumentStatus)
MODEL_BATCH_METRIC = "perimeter_embedding_model_batch_size"
MODEL_BATCH_HELP = (
    "Texts per model call during ingestion, after cross-document micro-batching "
    "(embedding.micro_batch_max)."
)


def _observe_micro_batches(services: Services, observer: Any) -> None:
    from perimeter.backends.micro_batching import MicroBatchingEmbedder

    if isinstance(services.embedder, MicroBatchingEmbedder):
        services.embedder.observer = observer


class _StateCollector(Collector):
    """Gauges read at scrape time: documents by status, queue depth."""

    def __init__(self, services: Callable[[], Services | None]) -> None:
        self._services = services

    def collect(self) -> Iterator[Metric]:
        services = self._services()
        if services is None:
            return
        docs = GaugeMetricFamily(
            "perimeter_documents", "Documents by ingestion status.", labels=["status"]
        )
        try:
            counts = services.metadata.count_by_status()
        except Exception as exc:  # a scrape must not fail because the DB blinked
            log.warning("metrics: cannot count documents: %s", exc)
        else:
            # Every known status is always exported (0 included), so rate()/alerts have a series.
            for status in sorted(set(KNOWN_STATUSES) | set(counts)):
                docs.add_metric([status], counts.get(status, 0))
            yield docs
        depth = services.queue.depth()
        if depth is not None:
            queue = GaugeMetricFamily(
                "perimeter_ingest_queue_depth", "Ingestion tasks waiting in the broker queue."
            )
            queue.add_metric([], depth)
            yield queue


class Metrics:
    """Every metric of one app, registered in its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._services: Services | None = None
        r = self.registry
        self.request_seconds = Histogram(
            "perimeter_http_request_duration_seconds",
            "HTTP request latency by route template and status.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.chunks_indexed = Counter(
            "perimeter_chunks_indexed", "Chunks embedded and written to the vector store.",
            registry=r,
        )  # fmt: skip
        self.embed_batch_size = Histogram(
            "perimeter_embedding_batch_size",
            "Texts per embedder call during ingestion.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.model_batch_size = Histogram(
            MODEL_BATCH_METRIC,
            MODEL_BATCH_HELP,
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.llm_first_token_seconds = Histogram(
            "perimeter_llm_time_to_first_token_seconds",
            "Time from the LLM request to its first streamed token.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.llm_tokens_per_second = Histogram(
            "perimeter_llm_tokens_per_second",
            "Completion tokens per second of LLM generation time.",
            buckets=TOKENS_PER_S_BUCKETS,
            registry=r,
        )
        self.llm_seconds = Histogram(
            "perimeter_llm_duration_seconds",
            "Wall time of one LLM answer.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        r.register(_StateCollector(lambda: self._services))

    def bind(self, services: Services) -> None:
        """Read state gauges from these services, and count their ingestion work."""
        self._services = services
        services.ingestion.observer = self
        _observe_micro_batches(services, self)

    # -- IngestObserver --------------------------------------------------------------------
    def embedded_batch(self, size: int) -> None:
        self.embed_batch_size.observe(size)

    def indexed(self, chunks: int) -> None:
        self.chunks_indexed.inc(chunks)

    # -- BatchObserver (cross-document micro-batching) ------------------------------------
    def coalesced_batch(self, texts: int, callers: int) -> None:
        self.model_batch_size.observe(texts)

    # -- LLM -------------------------------------------------------------------------------
    def observe_llm(self, timings: dict[str, Any], completion_tokens: int) -> None:
        llm_ms = timings.get("llm_ms")
        if not llm_ms:
            return  # abstained without calling the LLM
        self.llm_seconds.observe(llm_ms / 1000)
        first_ms = timings.get("llm_first_token_ms")
        if first_ms is not None:
            self.llm_first_token_seconds.observe(first_ms / 1000)
        # Generation rate excludes the time to first token (prompt processing) when known.
        gen_ms = llm_ms - (first_ms or 0.0)
        if completion_tokens > 0 and gen_ms > 0:
            self.llm_tokens_per_second.observe(completion_tokens / (gen_ms / 1000))

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


# -- the standalone worker (`perimeter worker`) ------------------------------------------------
TASK_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_worker_metrics(folder: Path | None = None) -> Path:
    """Switch prometheus_client to multiprocess mode, with its files in ``folder`` (default: a
    fresh temporary folder). Call it before any :class:`WorkerMetrics` is made: prefork children
    count in their own processes, and the main process serves the sum from these files."""
    from prometheus_client import values

    folder = folder or Path(tempfile.mkdtemp(prefix="perimeter-worker-metrics-"))
    folder.mkdir(parents=True, exist_ok=True)
    os.environ[MULTIPROC_ENV] = str(folder)
    # prometheus_client picks its value class when first imported; pick again now the folder
    # is set, so metrics made from here on write to the shared files whatever the import order.
    values.ValueClass = values.get_value_class()
    owner = os.getpid()

    def _cleanup() -> None:
        if os.getpid() == owner:  # not in forked children, which inherit atexit handlers
            shutil.rmtree(folder, ignore_errors=True)

    atexit.register(_cleanup)
    return folder


def serve_worker_metrics(folder: Path, port: int, host: str = "0.0.0.0") -> Any:
    """Serve /metrics on ``port``: the sum over every process that wrote to ``folder``. Returns
    the HTTP server (``shutdown()`` stops it)."""
    from prometheus_client import start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(folder))
    server, _thread = start_http_server(port, addr=host, registry=registry)
    log.info("worker metrics on http://%s:%d/metrics", host, port)
    return server


class WorkerMetrics:
    """What a standalone worker counts: documents and chunks indexed, embedding batch sizes,
    ingestion task durations and outcomes. Not registered in any registry: after
    :func:`prepare_worker_metrics` the values live in prometheus_client's multiprocess files,
    which :func:`serve_worker_metrics` reads. ``bind`` is called in each process that builds
    services (``ServicesHolder``); ``connect_task_signals`` once, before the pool starts."""

    def __init__(self) -> None:
        self.documents_indexed = Counter(
            "perimeter_documents_indexed", "Documents ingested and indexed by this worker."
        )
        self.chunks_indexed = Counter(
            "perimeter_chunks_indexed", "Chunks embedded and written to the vector store."
        )
        self.embed_batch_size = Histogram(
            "perimeter_embedding_batch_size",
            "Texts per embedder call during ingestion.",
            buckets=BATCH_BUCKETS,
        )
        self.model_batch_size = Histogram(
            MODEL_BATCH_METRIC, MODEL_BATCH_HELP, buckets=BATCH_BUCKETS
        )
        self.tasks = Counter(
            "perimeter_ingest_tasks",
            "Ingestion tasks finished, by outcome: indexed, skipped, gone, failed (the document "
            "is marked failed), retry (transient error, retried later), error (the task raised).",
            ["outcome"],
        )
        self.task_seconds = Histogram(
            "perimeter_ingest_task_duration_seconds",
            "Wall time of one ingestion task, by outcome.",
            ["outcome"],
            buckets=TASK_BUCKETS,
        )
        self._started: dict[str, float] = {}

    def bind(self, services: Services) -> None:
        services.ingestion.observer = self
        _observe_micro_batches(services, self)

    # -- IngestObserver / BatchObserver ----------------------------------------------------
    def embedded_batch(self, size: int) -> None:
        self.embed_batch_size.observe(size)

    def indexed(self, chunks: int) -> None:
        self.documents_indexed.inc()
        self.chunks_indexed.inc(chunks)

    def coalesced_batch(self, texts: int, callers: int) -> None:
        self.model_batch_size.observe(texts)

    # -- Celery tasks ----------------------------------------------------------------------
    def task_started(self, task_id: str) -> None:
        self._started[task_id] = time.perf_counter()

    def task_finished(self, task_id: str, outcome: str) -> None:
        started = self._started.pop(task_id, None)
        self.tasks.labels(outcome).inc()
        if started is not None:
            self.task_seconds.labels(outcome).observe(time.perf_counter() - started)

    def connect_task_signals(self) -> None:
        """Time every task and count its outcome (Celery signals fire in the process and thread
        that runs the task: a prefork child, or a thread of the threads pool)."""
        from celery.signals import task_postrun, task_prerun

        @task_prerun.connect(weak=False)
        def _prerun(task_id: str | None = None, **_: Any) -> None:
            if task_id is not None:
                self.task_started(task_id)

        @task_postrun.connect(weak=False)
        def _postrun(
            task_id: str | None = None,
            retval: Any = None,
            state: str | None = None,
            **_: Any,
        ) -> None:
            if task_id is None:
                return
            if state == "RETRY":
                outcome = "retry"
            elif state == "SUCCESS" and isinstance(retval, dict):
                outcome = str(retval.get("status", "unknown"))
            else:
                outcome = "error"
            self.task_finished(task_id, outcome)
