"""Cross-document micro-batching: concurrent ``encode_documents`` calls become one model call.

A worker embeds one document per task. Small documents (an abstract, an e-mail) give the model
one or two texts per call, which wastes a GPU and, less so, a CPU. When several tasks run at once
in one process (the embedded worker's threads, ``perimeter worker --pool threads``), this wrapper
coalesces their calls: while one batch runs in the model, the calls that arrive queue up, and the
next one to run takes all of them (up to ``max_batch`` texts) into a single inner call. Each
caller gets back exactly its own vectors, in order.

Leader/follower (perimeter.coalescing), no background thread: the caller that finds the model
idle becomes the leader, runs the batch on its own thread and hands every caller its slice; the
others wait on a condition. So a lone caller runs at once (no added latency), and batches form
by themselves under load, as large as the number of callers that arrived while the previous
batch ran. ``max_wait_ms`` adds an optional short linger: a leader whose previous batch
coalesced several callers (concurrent load was seen) waits at most that long for company before
running. ``concurrency`` > 1 lets that many batches run in the model at once, each led by its
own caller: on a CPU, single-threaded calls side by side, one per core, instead of one call
whose threads must wait for each other (BENCHMARKS.md, "one model call per core": not faster
than one batch at a time on the 2-vCPU test host, within its noise).

Queries (``encode_queries``) coalesce the same way in a lane of their own (``queries=True``, the
default): under concurrent questions the API server otherwise ran one model call per request
thread at once, up to 32 forward passes sharing the cores, each paying the model's per-call
cost (BENCHMARKS.md, "Embedded vector store: Qdrant Edge", measures both). The query lane has
its own slot, so a question never waits behind a 64-chunk document batch of an ingestion running
in the same process, and a lone question still runs at once. Everything else passes straight
through to the wrapped embedder.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from perimeter.backends.embedder_proxy import EmbedderProxy
from perimeter.backends.protocols import Embedder
from perimeter.coalescing import Coalescer
from perimeter.domain import EncodedText


class BatchObserver(Protocol):
    """Told about every inner call: texts in it, and how many callers they came from."""

    def coalesced_batch(self, texts: int, callers: int) -> None: ...


class MicroBatchingEmbedder(EmbedderProxy):
    """An :class:`Embedder` that coalesces concurrent encodes into shared inner calls.

    ``max_batch``: most texts per inner call (a single caller with more texts still runs as one
    call; it is never split). ``max_wait_ms``: longest a leader lingers for company, and only
    when the previous batch showed concurrent callers; 0 never lingers. ``concurrency``: inner
    document calls that may run at once (1: one batch at a time; more suits a CPU model running
    one thread per call, one call per core). ``queries``: coalesce ``encode_queries`` too, in
    its own lane (one batch of at most ``max_query_batch`` questions at a time, never
    lingering: a question's latency is what it protects); False passes queries straight
    through.
    """

    def __init__(
        self,
        inner: Embedder,
        max_batch: int = 64,
        max_wait_ms: float = 0.0,
        concurrency: int = 1,
        queries: bool = True,
        max_query_batch: int = 8,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        super().__init__(inner)
        self._max_batch = max_batch
        self._concurrency = concurrency
        self._documents: Coalescer[str, EncodedText] = Coalescer(
            self._inner.encode_documents, max_batch, max_wait_ms / 1000.0, concurrency
        )
        self._queries: Coalescer[str, EncodedText] | None = (
            Coalescer(self._inner.encode_queries, max_query_batch) if queries else None
        )
        self._observer: BatchObserver | None = None

    @property
    def observer(self) -> BatchObserver | None:
        """Told about every inner document call (set by whoever exports metrics,
        perimeter.observability); query batches are not reported."""
        return self._observer

    @observer.setter
    def observer(self, value: BatchObserver | None) -> None:
        self._observer = value
        self._documents.on_batch = value.coalesced_batch if value is not None else None

    @property
    def max_batch(self) -> int:
        return self._max_batch

    @property
    def concurrency(self) -> int:
        return self._concurrency

    @property
    def coalesces_queries(self) -> bool:
        return self._queries is not None

    @property
    def waiting(self) -> int:
        """Document callers queued for the next batch (not counting the batch in the model)."""
        return self._documents.waiting

    @property
    def queries_waiting(self) -> int:
        """Questions queued for the next query batch (0 when queries pass straight through)."""
        return self._queries.waiting if self._queries is not None else 0

    # -- Embedder protocol: coalesced ------------------------------------------------------
    def encode_documents(self, texts: Sequence[str]) -> list[EncodedText]:
        return self._documents.submit(texts)

    def encode_queries(self, texts: Sequence[str]) -> list[EncodedText]:
        if self._queries is None:
            return self._inner.encode_queries(texts)
        return self._queries.submit(texts)
