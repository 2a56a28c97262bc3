"""The Celery app factory and the by-name enqueue used by the API.

The API never imports task code: it sends ``perimeter.ingest_document`` by name. Workers register
the task body in :mod:`perimeter.workers.tasks`.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

from celery import Celery

from perimeter.tracing import inject_trace_headers

if TYPE_CHECKING:
    from perimeter.settings import Settings

INGEST_TASK = "perimeter.ingest_document"


def create_celery_app(settings: Settings, queue: str | None = None) -> Celery:
    queue_name = queue or settings.broker.queue
    app = Celery("perimeter", broker=settings.broker_url, set_as_current=False)
    transport: dict[str, Any] = {}
    if settings.broker_url.startswith(("redis://", "rediss://")):
        # Redis redelivers an unacked message after visibility_timeout: it must exceed the task
        # time limit or a slow document is processed twice in parallel.
        transport["visibility_timeout"] = settings.broker.visibility_timeout_s
    # The SQLite broker (embedded default) polls every second; its transport hands every
    # transport option to SQLAlchemy's create_engine, so polling_interval cannot be tuned there.
    if is_amqp(settings.broker_url):
        _configure_rabbitmq(app, queue_name, settings.broker.quorum_queues)
    app.conf.update(
        task_default_queue=queue_name,
        task_routes={INGEST_TASK: {"queue": queue_name}},
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        # At-least-once: ack after the task finishes, and requeue if the worker dies mid-task.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_time_limit=settings.broker.task_time_limit_s,
        task_soft_time_limit=settings.broker.task_soft_time_limit_s,
        broker_transport_options={**app.conf.broker_transport_options, **transport},
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=5,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        # Children load the embedder in worker_process_init; see BrokerSettings for why.
        worker_proc_alive_timeout=settings.broker.worker_start_timeout_s,
        # Celery counts this in KiB; None turns the check off.
        worker_max_memory_per_child=(settings.broker.worker_max_memory_mb * 1024) or None,
    )
    return app


def is_amqp(url: str) -> bool:
    return url.startswith(("amqp://", "amqps://", "pyamqp://"))


def _configure_rabbitmq(app: Celery, queue_name: str, quorum: bool) -> None:
    """RabbitMQ: the ingestion queue as a quorum queue (Raft-replicated over the RabbitMQ
    cluster, so a broker node loss loses no task), and publisher confirms, so an upload's task
    is acknowledged by the broker before the API answers 202."""
    from kombu import Exchange, Queue

    arguments = {"x-queue-type": "quorum"} if quorum else None
    app.conf.update(
        task_queues=[
            Queue(
                queue_name,
                Exchange(queue_name, type="direct"),
                routing_key=queue_name,
                durable=True,
                queue_arguments=arguments,
            )
        ],
        # Quorum queues refuse global QoS; Celery then switches to per-consumer prefetch.
        worker_detect_quorum_queues=True,
        broker_transport_options={"confirm_publish": True},
    )


class CeleryIngestQueue:
    """What the API and the recovery sweep need from the queue: enqueue by name."""

    def __init__(self, app: Celery, queue: str) -> None:
        self._app = app
        self._queue = queue

    @property
    def app(self) -> Celery:
        return self._app

    def enqueue_ingest(self, document_id: str) -> None:
        # The caller's trace (the upload request) continues in the worker: W3C traceparent in
        # the message headers. None when tracing is off or no span is current.
        trace_headers = inject_trace_headers()
        self._app.send_task(
            INGEST_TASK, args=[document_id], queue=self._queue, headers=trace_headers or None
        )

    def ping(self) -> bool:
        try:
            with self._app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=2)
            return True
        except Exception:
            return False

    def depth(self) -> int | None:
        """Messages waiting in the queue, where the transport can tell."""
        from kombu.exceptions import OperationalError

        try:
            with self._app.connection_for_read() as conn:
                # Bounded: a scrape or health check must not hang on a broker that is down.
                conn.ensure_connection(max_retries=1, timeout=2)
                with conn.channel() as channel:
                    try:
                        _name, count, _consumers = channel.queue_declare(self._queue, passive=True)
                    except OperationalError:
                        raise
                    except Exception as exc:
                        # Redis keeps a queue as a list, and an empty list does not exist: the
                        # passive declare answers 404 for a queue that is merely empty.
                        if "NOT_FOUND" in str(exc):
                            return 0
                        raise
                    return int(count)
        except Exception:
            return None


def worker_hostname(prefix: str = "perimeter") -> str:
    return f"{prefix}@{socket.gethostname()}"
