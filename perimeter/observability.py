"""Prometheus metrics, one registry per app (no module-level collectors: two apps in one process,
as in the tests, never share or double-register series).

What is counted where:

* request latency: the API middleware, labelled by route *template* (``/v1/documents/{id}``,
  never the raw path, which would make one series per document) and status;
* documents by status and ingestion queue depth: computed at scrape time from the metadata DB and
  the broker, so they are right even when the worker is another process;
* chunks indexed and embedding batch sizes: observed by the ingestion service in the process that
  runs it. Under `perimeter up` that is the API process; a separate `perimeter worker` counts its
  own (not exported by the API);
* LLM time to first token (streamed answers) and tokens/s: observed by the query route.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from perimeter.composition import Services

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
TOKENS_PER_S_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
KNOWN_STATUSES = ("queued", "parsing", "embedding", "indexed", "failed")


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

    # -- IngestObserver --------------------------------------------------------------------
    def embedded_batch(self, size: int) -> None:
        self.embed_batch_size.observe(size)

    def indexed(self, chunks: int) -> None:
        self.chunks_indexed.inc(chunks)

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
