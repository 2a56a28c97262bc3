"""Cross-document micro-batching: concurrent ``encode_documents`` calls become one model call.

A worker embeds one document per task. Small documents (an abstract, an e-mail) give the model
one or two texts per call, which wastes a GPU and, less so, a CPU. When several tasks run at once
in one process (the embedded worker's threads, ``perimeter worker --pool threads``), this wrapper
coalesces their calls: while one batch runs in the model, the calls that arrive queue up, and the
next one to run takes all of them (up to ``max_batch`` texts) into a single inner call. Each
caller gets back exactly its own vectors, in order.

Leader/follower, no background thread: the caller that finds the model idle becomes the leader,
runs the batch on its own thread and hands every caller its slice; the others wait on a
condition. So a lone caller runs at once (no added latency), and batches form by themselves
under load, as large as the number of callers that arrived while the previous batch ran.
``max_wait_ms`` adds an optional short linger: a leader whose previous batch coalesced several
callers (concurrent load was seen) waits at most that long for company before running.
``concurrency`` > 1 lets that many batches run in the model at once, each led by its own caller:
on a CPU, single-threaded calls side by side, one per core, instead of one call whose threads
must wait for each other (BENCHMARKS.md, "one model call per core": not faster than one
batch at a time on the 2-vCPU test host, within its noise).

Queries (``encode_queries``) and everything else pass straight through to the wrapped embedder.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Protocol

from perimeter.backends.embedder_proxy import EmbedderProxy
from perimeter.backends.protocols import Embedder
from perimeter.domain import EncodedText


class BatchObserver(Protocol):
    """Told about every inner call: texts in it, and how many callers they came from."""

    def coalesced_batch(self, texts: int, callers: int) -> None: ...


class _Request:
    __slots__ = ("done", "error", "result", "taken", "texts")

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.result: list[EncodedText] | None = None
        self.error: BaseException | None = None
        self.taken = False  # in a batch that a leader is running
        self.done = False


class MicroBatchingEmbedder(EmbedderProxy):
    """An :class:`Embedder` that coalesces concurrent document encodes into one inner call.

    ``max_batch``: most texts per inner call (a single caller with more texts still runs as one
    call; it is never split). ``max_wait_ms``: longest a leader lingers for company, and only
    when the previous batch showed concurrent callers; 0 never lingers. ``concurrency``: inner
    calls that may run at once (1: one batch at a time; more suits a CPU model running one
    thread per call, one call per core).
    """

    def __init__(
        self,
        inner: Embedder,
        max_batch: int = 64,
        max_wait_ms: float = 0.0,
        concurrency: int = 1,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if max_wait_ms < 0:
            raise ValueError("max_wait_ms must not be negative")
        super().__init__(inner)
        self._max_batch = max_batch
        self._max_wait_s = max_wait_ms / 1000.0
        self._cond = threading.Condition()
        self._pending: deque[_Request] = deque()
        self._pending_texts = 0
        self._concurrency = concurrency
        self._running = 0  # batches in the model now, at most _concurrency
        self._last_callers = 0
        # Set by whoever exports metrics (perimeter.observability).
        self.observer: BatchObserver | None = None

    @property
    def max_batch(self) -> int:
        return self._max_batch

    @property
    def concurrency(self) -> int:
        return self._concurrency

    @property
    def waiting(self) -> int:
        """Callers queued for the next batch (not counting the batch in the model)."""
        with self._cond:
            return len(self._pending)

    # -- Embedder protocol: coalesced ------------------------------------------------------
    def encode_documents(self, texts: Sequence[str]) -> list[EncodedText]:
        if not texts:
            return []
        request = _Request(list(texts))
        with self._cond:
            self._pending.append(request)
            self._pending_texts += len(request.texts)
            self._cond.notify_all()  # a lingering leader may now have a full batch
        while True:
            with self._cond:
                # Wait while our request is in another leader's batch, or every slot is busy.
                while not request.done and (request.taken or self._running >= self._concurrency):
                    self._cond.wait()
                if request.done:
                    break
                # A model slot is free and our request is still pending: lead the next batch.
                self._running += 1
                try:
                    self._linger()
                except BaseException:
                    self._running -= 1
                    self._cond.notify_all()
                    raise
                if request.taken:
                    # With several slots, another leader took it while we lingered.
                    self._running -= 1
                    self._cond.notify_all()
                    continue
                batch = self._take_batch()
            fatal = self._run(batch)
            if fatal is not None:
                # KeyboardInterrupt, SystemExit, ...: the leader's own thread stops too, even
                # when its request was not in this batch (then it leaves the queue unserved).
                with self._cond:
                    if not request.done and not request.taken:
                        self._pending.remove(request)
                        self._pending_texts -= len(request.texts)
                raise fatal
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    def _linger(self) -> None:
        """Wait (lock held, released while waiting) up to max_wait_s for the batch to fill,
        but only when the previous batch coalesced several callers: a lone caller never
        waits."""
        if self._max_wait_s <= 0 or self._last_callers < 2:
            return
        deadline = time.monotonic() + self._max_wait_s
        while self._pending_texts < self._max_batch:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._cond.wait(left)

    def _take_batch(self) -> list[_Request]:
        """FIFO: the oldest requests first, up to max_batch texts (at least one request)."""
        batch = [self._pending.popleft()]
        total = len(batch[0].texts)
        while self._pending and total + len(self._pending[0].texts) <= self._max_batch:
            request = self._pending.popleft()
            batch.append(request)
            total += len(request.texts)
        self._pending_texts -= total
        for request in batch:
            request.taken = True
        return batch

    def _run(self, batch: list[_Request]) -> BaseException | None:
        """Run one inner call for the batch (lock not held), then hand out the slices. Returns
        the error when it is not an ordinary Exception (the leader must stop too)."""
        texts = [t for r in batch for t in r.texts]
        results: list[EncodedText] | None = None
        error: BaseException | None = None
        try:
            results = self._inner.encode_documents(texts)
            if len(results) != len(texts):
                raise RuntimeError(
                    f"embedder returned {len(results)} vectors for {len(texts)} texts"
                )
        except BaseException as exc:  # every caller of the batch gets it
            error = exc
        with self._cond:
            start = 0
            for r in batch:
                if error is not None or results is None:
                    r.error = error
                else:
                    r.result = results[start : start + len(r.texts)]
                start += len(r.texts)
                r.done = True
            self._last_callers = len(batch)
            self._running -= 1
            self._cond.notify_all()
        observer = self.observer
        if observer is not None and error is None:
            with contextlib.suppress(Exception):  # metrics must never fail an ingestion
                observer.coalesced_batch(len(texts), len(batch))
        return None if error is None or isinstance(error, Exception) else error
