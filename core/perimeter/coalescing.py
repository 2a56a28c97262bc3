"""Leader/follower coalescing: concurrent calls that each carry a few items become one inner
call over all of them.

Used where a per-call fixed cost dominates under concurrency: a model forward pass
(perimeter.backends.micro_batching: documents and questions) and a database commit
(perimeter.audit: one transaction for every audit entry that arrived while the previous one
committed). No background thread: the caller that finds a slot free becomes the leader, runs
the batch on its own thread and hands every caller its slice of the results; the others wait on
a condition. So a lone caller runs at once (no added latency), and batches form by themselves
under load, as large as the number of callers that arrived while the previous batch ran.

``max_wait_s`` adds an optional short linger: a leader whose previous batch coalesced several
callers (concurrent load was seen) waits at most that long for company before running.
``concurrency`` > 1 lets that many batches run at once, each led by its own caller.
Every caller returns only once its own items have gone through the inner call, and an error of
that call reaches every caller of the batch, and only them.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class _Request(Generic[T, R]):
    __slots__ = ("done", "error", "items", "result", "taken")

    def __init__(self, items: list[T]) -> None:
        self.items = items
        self.result: list[R] | None = None
        self.error: BaseException | None = None
        self.taken = False  # in a batch that a leader is running
        self.done = False


class Coalescer(Generic[T, R]):
    """Runs ``run(items)`` for the items of every caller queued at that moment.

    ``run`` must return one result per item, in order. ``max_items``: most items per inner call
    (a single caller with more still runs as one call; it is never split). ``on_batch(items,
    callers)`` hears about every successful inner call; its errors are ignored.
    """

    def __init__(
        self,
        run: Callable[[list[T]], Sequence[R]],
        max_items: int,
        max_wait_s: float = 0.0,
        concurrency: int = 1,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> None:
        if max_items < 1:
            raise ValueError("max_items must be at least 1")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if max_wait_s < 0:
            raise ValueError("max_wait_s must not be negative")
        self._run_inner = run
        self._max_items = max_items
        self._max_wait_s = max_wait_s
        self._cond = threading.Condition()
        self._pending: deque[_Request[T, R]] = deque()
        self._pending_items = 0
        self._concurrency = concurrency
        self._running = 0  # batches in the inner call now, at most _concurrency
        self._last_callers = 0
        self.on_batch = on_batch

    @property
    def waiting(self) -> int:
        """Callers queued for the next batch (not counting the batches running)."""
        with self._cond:
            return len(self._pending)

    def submit(self, items: Sequence[T]) -> list[R]:
        if not items:
            return []
        request: _Request[T, R] = _Request(list(items))
        with self._cond:
            self._pending.append(request)
            self._pending_items += len(request.items)
            self._cond.notify_all()  # a lingering leader may now have a full batch
        while True:
            with self._cond:
                # Wait while our request is in another leader's batch, or every slot is busy.
                while not request.done and (request.taken or self._running >= self._concurrency):
                    self._cond.wait()
                if request.done:
                    break
                # A slot is free and our request is still pending: lead the next batch.
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
                        self._pending_items -= len(request.items)
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
        while self._pending_items < self._max_items:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._cond.wait(left)

    def _take_batch(self) -> list[_Request[T, R]]:
        """FIFO: the oldest requests first, up to max_items items (at least one request)."""
        batch = [self._pending.popleft()]
        total = len(batch[0].items)
        while self._pending and total + len(self._pending[0].items) <= self._max_items:
            request = self._pending.popleft()
            batch.append(request)
            total += len(request.items)
        self._pending_items -= total
        for request in batch:
            request.taken = True
        return batch

    def _run(self, batch: list[_Request[T, R]]) -> BaseException | None:
        """Run one inner call for the batch (lock not held), then hand out the slices. Returns
        the error when it is not an ordinary Exception (the leader must stop too)."""
        items = [item for r in batch for item in r.items]
        results: list[R] | None = None
        error: BaseException | None = None
        try:
            results = list(self._run_inner(items))
            if len(results) != len(items):
                raise RuntimeError(f"inner call returned {len(results)} results for {len(items)}")
        except BaseException as exc:  # every caller of the batch gets it
            error = exc
        with self._cond:
            start = 0
            for r in batch:
                if error is not None or results is None:
                    r.error = error
                else:
                    r.result = results[start : start + len(r.items)]
                start += len(r.items)
                r.done = True
            self._last_callers = len(batch)
            self._running -= 1
            self._cond.notify_all()
        on_batch = self.on_batch
        if on_batch is not None and error is None:
            with contextlib.suppress(Exception):  # metrics must never fail the call
                on_batch(len(items), len(batch))
        return None if error is None or isinstance(error, Exception) else error
