"""A real Celery worker running on threads inside the current process.

The embedded default needs it: the embedded vector store locks its folder, so the API and the
worker must share one process (and one client). Production runs `perimeter worker` instead.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

from celery import Celery
from celery.worker import WorkController

from perimeter.composition import Services
from perimeter.queueing import worker_hostname

log = logging.getLogger(__name__)


class EmbeddedWorker:
    def __init__(self, app: Celery, queue: str, concurrency: int = 2) -> None:
        self._app = app
        self._queue = queue
        self._concurrency = concurrency
        self._controller: WorkController | None = None
        self._thread: threading.Thread | None = None

    def _amqp(self) -> bool:
        return str(self._app.conf.broker_url).startswith(("amqp://", "amqps://", "pyamqp://"))

    def start(self, ready_timeout_s: float = 30.0) -> None:
        # The threads pool executes tasks in fresh threads, where Celery resolves the task via
        # the process's *default* app (trace_task_ret has no app argument): make ours the
        # default, or the pool looks the task up on an app that does not have it and drops it.
        self._app.set_default()
        self._app.set_current()
        if self._amqp():
            # py-amqp connections are not thread-safe: stopping the worker from the caller's
            # thread closed the remote-control channel while the worker thread read the same
            # connection, and hung for minutes. Nothing pings an in-process worker.
            self._app.conf.worker_enable_remote_control = False
        controller = self._app.WorkController(
            hostname=worker_hostname(f"embedded-{id(self)}"),
            pool_cls="threads",
            concurrency=self._concurrency,
            queues=[self._queue],
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            loglevel="INFO",
        )
        self._controller = controller
        self._thread = threading.Thread(target=controller.start, name="celery-worker", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + ready_timeout_s
        # The consumer is up once its blueprint reports RUN; until then tasks just wait queued.
        while time.monotonic() < deadline:
            consumer = getattr(controller, "consumer", None)
            if consumer is not None and getattr(consumer.blueprint, "state", None) == 1:
                return
            time.sleep(0.05)
        log.warning(
            "embedded worker not ready after %.0fs; tasks stay queued until it is", ready_timeout_s
        )

    def stop(self) -> None:
        if self._controller is not None and self._amqp():
            # py-amqp connections are not thread-safe: WorkController.stop from this thread
            # cancels consumers on the connection the worker thread is reading, and hangs. Ask
            # the worker's own loop to shut down instead (it checks this flag between events).
            from celery.worker import state

            state.should_stop = 0
            if self._thread is not None:
                self._thread.join(timeout=30)
            state.should_stop = None
            return
        if self._controller is not None:
            # warm shutdown: running tasks finish; unacked ones (acks_late) stay in the broker.
            self._controller.stop(in_sighandler=False)
        if self._thread is not None:
            self._thread.join(timeout=30)


def requeue_stale(services: Services, older_than: timedelta) -> int:
    """Re-enqueue documents whose task message was lost (crash, broker wipe). Safe to run any
    time: the task is idempotent, so a document that was merely slow is processed twice at
    worst, never duplicated."""
    stale = services.ingestion.stale(older_than)
    for doc in stale:
        services.queue.enqueue_ingest(doc.id)
    if stale:
        log.info("re-enqueued %d unfinished document(s)", len(stale))
    return len(stale)
