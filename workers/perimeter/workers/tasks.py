"""The ingest task. Thin: it resolves services once per process and calls the ingest service.

Delivery is at-least-once (acks_late, reject_on_worker_lost); correctness comes from the task
being idempotent (deterministic point ids) and from an attempt counter kept in the metadata DB,
outside the broker, so a file that kills its worker every time stops after a bounded number of
tries and is marked failed with the reason.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from celery import Celery, Task
from celery.exceptions import SoftTimeLimitExceeded

from perimeter.composition import Services, build_services
from perimeter.logs import request_id_var
from perimeter.queueing import INGEST_TASK, create_celery_app
from perimeter.settings import Settings
from perimeter.tracing import continue_trace, trace_headers_of

log = logging.getLogger(__name__)

RETRY_BACKOFF_S = (5, 20, 60)


class ServicesHolder:
    """Builds services on first use in *this* process (safe across prefork's fork)."""

    def __init__(
        self,
        settings: Settings,
        services: Services | None = None,
        on_built: Callable[[Services], None] | None = None,
    ) -> None:
        self._settings = settings
        self._services = services
        self._lock = threading.Lock()
        # Called once with the services this process builds (perimeter worker: bind metrics).
        self._on_built = on_built

    def get(self) -> Services:
        if self._services is None:
            with self._lock:
                if self._services is None:
                    services = build_services(self._settings)
                    services.ensure_ready()
                    if self._on_built is not None:
                        self._on_built(services)
                    self._services = services
        return self._services


class IngestDocumentTask(Task):  # type: ignore[misc]
    """Parse → chunk → embed → upsert one document. Registered per app (``register_task``), not
    through ``@app.task``, whose default ``shared=True`` puts the task on every app created
    later in the process, where it would run with the first app's services."""

    name = INGEST_TASK
    acks_late = True
    reject_on_worker_lost = True
    max_retries = len(RETRY_BACKOFF_S)
    typing = False

    def __init__(self, holder: ServicesHolder, settings: Settings) -> None:
        self.holder = holder
        self.time_limit = settings.broker.task_time_limit_s
        self.soft_time_limit = settings.broker.task_soft_time_limit_s
        self._soft_limit_s = settings.broker.task_soft_time_limit_s

    def run(self, document_id: str) -> dict[str, Any]:
        # Log lines of this task carry its task id, as API lines carry their request id.
        request_id_var.set(self.request.id)
        services = self.holder.get()
        try:
            # ingest.process joins the trace of the request that enqueued it (traceparent).
            with continue_trace(trace_headers_of(self.request)):
                outcome = services.ingestion.process(document_id)
        except SoftTimeLimitExceeded:
            reason = (
                f"ingestion exceeded {self._soft_limit_s}s "
                "(PERIMETER_BROKER__TASK_SOFT_TIME_LIMIT_S)"
            )
            services.ingestion.mark_failed(document_id, reason)
            return {"document_id": document_id, "status": "failed", "detail": reason}
        except Exception as exc:
            # Transient (store or DB unreachable, ...): retry with backoff, then give up loudly.
            attempt = self.request.retries
            if attempt < self.max_retries:
                log.warning("ingest %s failed (%s); retry %d", document_id, exc, attempt + 1)
                raise self.retry(exc=exc, countdown=RETRY_BACKOFF_S[attempt]) from exc
            log.exception("ingest %s failed for good", document_id)
            services.ingestion.mark_failed(document_id, f"ingestion failed: {exc}")
            return {"document_id": document_id, "status": "failed", "detail": str(exc)}
        log.info(
            "ingest %s: %s (%d chunks, %.2fs)",
            document_id,
            outcome.status,
            outcome.chunk_count,
            outcome.seconds,
        )
        return {"document_id": document_id, "status": outcome.status}


def create_worker_app(
    settings: Settings,
    services: Services | None = None,
    queue: str | None = None,
    on_built: Callable[[Services], None] | None = None,
) -> tuple[Celery, ServicesHolder]:
    app = create_celery_app(settings, queue=queue)
    holder = ServicesHolder(settings, services, on_built)
    app.register_task(IngestDocumentTask(holder, settings))
    return app, holder
