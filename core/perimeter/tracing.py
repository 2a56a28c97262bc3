"""OpenTelemetry tracing of API requests, ingestion and questions. Off by default.

When ``PERIMETER_TRACING__ENABLED=true``, spans go where the settings say and nowhere else: to an
OpenTelemetry Collector *inside the perimeter* over OTLP/HTTP (``PERIMETER_TRACING__ENDPOINT``,
checked by ``perimeter doctor`` like every other endpoint), or, for debugging, to stderr as JSON
lines. Off, every service holds OpenTelemetry's ``NoOpTracer``: no span is recorded, nothing is
exported, no SDK is even imported.

No global state: this module never calls ``opentelemetry.trace.set_tracer_provider``.
:func:`build_tracer` makes a ``TracerProvider`` from settings; ``composition.build_services``
hands its tracer to the services that create spans and shuts it down (flushing) in
``Services.close()``. Two compositions in one process (the tests) trace independently.

Where spans come from:

* ``TracingMiddleware`` (the API): one SERVER span per request, ``"{method} {route template}"``,
  continuing a caller's W3C ``traceparent``;
* ``IngestionService.process``: ``ingest.process`` > ``ingest.parse``, ``ingest.chunk``,
  ``ingest.embed``, ``ingest.upsert``;
* ``Retriever.retrieve``: ``retrieval.search`` > ``retrieval.embed_query``,
  ``retrieval.vector_search``, ``retrieval.rerank``;
* ``AnswerService``: ``llm.complete`` / ``llm.stream`` with ``gen_ai.*`` attributes.

The upload request's trace continues into the Celery worker: the API puts ``traceparent`` in the
task message headers (:func:`inject_trace_headers`), and the task makes it the parent of its
``ingest.process`` span (:func:`continue_trace`).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry.trace import NoOpTracer, SpanKind, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from perimeter.logs import request_id_var

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from perimeter.settings import TracingSettings

log = logging.getLogger(__name__)

INSTRUMENTATION_NAME = "perimeter"
# W3C Trace Context, and only that: explicit, so OTEL_PROPAGATORS cannot change what is sent.
TRACE_HEADERS = ("traceparent", "tracestate")
_PROPAGATOR = TraceContextTextMapPropagator()

# Probes and scrapes: frequent, uninteresting, and they would drown the traces that matter.
UNTRACED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


@dataclass
class Tracing:
    """A tracer and, when tracing is on, the provider that records and exports its spans."""

    tracer: Tracer
    provider: TracerProvider | None = None

    @property
    def enabled(self) -> bool:
        return self.provider is not None

    def force_flush(self, timeout_ms: int = 30_000) -> bool:
        """Export every finished span now; True when the exporter took them all."""
        if self.provider is None:
            return True
        return bool(self.provider.force_flush(timeout_ms))

    def shutdown(self) -> None:
        """Flush what is buffered and stop the exporter. Safe to call more than once."""
        provider, self.provider = self.provider, None
        if provider is not None:
            self.tracer = NoOpTracer()
            try:
                provider.shutdown()
            except Exception as exc:  # a collector that is down must not fail a shutdown
                log.warning("tracing: shutdown failed: %s", exc)


def disabled_tracing() -> Tracing:
    return Tracing(NoOpTracer())


def parse_headers(raw: str | None) -> dict[str, str]:
    """``"name=value,name2=value2"`` (the OTEL_EXPORTER_OTLP_HEADERS form) into a dict."""
    headers: dict[str, str] = {}
    for item in (raw or "").split(","):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"tracing header {item.strip()!r} is not name=value")
        headers[name.strip().lower()] = value.strip()
    return headers


def build_tracer(settings: TracingSettings, *, exporter: SpanExporter | None = None) -> Tracing:
    """The tracing that ``settings`` ask for. Disabled: a ``NoOpTracer`` and no provider.

    ``exporter`` replaces the configured one (tests hand in an in-memory exporter); it is
    driven synchronously, so a span is exported the moment it ends.
    """
    if not settings.enabled:
        return disabled_tracing()

    from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SimpleSpanProcessor,
        SpanProcessor,
    )
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    processor: SpanProcessor
    if exporter is not None:
        processor = SimpleSpanProcessor(exporter)
    elif settings.exporter == "console":
        processor = SimpleSpanProcessor(_console_exporter())
    else:
        processor = BatchSpanProcessor(_otlp_exporter(settings))
    version = _version()
    attributes: dict[str, str] = {SERVICE_NAME: settings.service_name, SERVICE_VERSION: version}
    provider = TracerProvider(
        sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
        resource=Resource.create(attributes),
    )
    provider.add_span_processor(processor)
    return Tracing(provider.get_tracer(INSTRUMENTATION_NAME, version), provider)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("perimeter")
    except PackageNotFoundError:
        return "unknown"


def _otlp_exporter(settings: TracingSettings) -> SpanExporter:
    import requests
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    if not settings.endpoint:  # the settings validator already refuses this
        raise ValueError("tracing.endpoint is required with the otlp-http exporter")
    # A session that ignores HTTP(S)_PROXY and .netrc from the environment: spans go straight
    # to the configured collector, never through a proxy that may lead outside the perimeter.
    session = requests.Session()
    session.trust_env = False
    headers = parse_headers(settings.headers.get_secret_value() if settings.headers else None)
    return OTLPSpanExporter(
        endpoint=settings.endpoint,
        headers=headers,
        timeout=settings.timeout_s,
        session=session,
    )


def _console_exporter() -> SpanExporter:
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    def one_line(span: ReadableSpan) -> str:
        return span.to_json(indent=None) + "\n"

    return ConsoleSpanExporter(out=sys.stderr, formatter=one_line)


# -- propagation: API -> Celery task -----------------------------------------------------------


def inject_trace_headers(carrier: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """The current span's W3C ``traceparent`` (and ``tracestate``), for a task message.

    Empty when no span is recording (tracing off, or outside any request)."""
    out: dict[str, str] = dict(carrier or {})
    _PROPAGATOR.inject(out)
    return out


def trace_headers_of(request: Any) -> dict[str, str]:
    """The W3C trace headers a Celery task was sent with. Celery hands custom message headers
    to the task as attributes of ``task.request`` (and, in some versions, in its ``headers``)."""
    found: dict[str, str] = {}
    nested = getattr(request, "headers", None)
    for name in TRACE_HEADERS:
        value = getattr(request, name, None)
        if value is None and isinstance(nested, Mapping):
            value = nested.get(name)
        if isinstance(value, str) and value:
            found[name] = value
    return found


@contextmanager
def continue_trace(carrier: Mapping[str, str] | None) -> Iterator[None]:
    """Within the block, the remote span named by ``carrier`` (a ``traceparent``) is the
    parent of new spans. Without one, nothing changes: spans start their own trace."""
    if not carrier or "traceparent" not in carrier:
        yield
        return
    token = otel_context.attach(_PROPAGATOR.extract(carrier))
    try:
        yield
    finally:
        otel_context.detach(token)


# -- the API: one SERVER span per request ------------------------------------------------------


class TracingMiddleware:
    """Pure ASGI middleware: one SERVER span per HTTP request, named ``"{method} {route}"``
    with the route *template* (``/v1/documents/{document_id}``, never the raw path). It
    continues an incoming W3C ``traceparent``, records HTTP semantic-convention attributes and
    the request id of ``perimeter.logs``, and covers a streamed body to its last byte.

    Installed inside the request-id middleware (so the id is known) only when tracing is on;
    ``tracer`` returns the tracer of the app's services, or None while they are not built."""

    def __init__(self, app: ASGIApp, tracer: Callable[[], Tracer | None]) -> None:
        self.app = app
        self._tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        tracer = self._tracer() if scope["type"] == "http" else None
        if tracer is None or scope.get("path") in UNTRACED_PATHS:
            await self.app(scope, receive, send)
            return
        headers = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())
        }
        method = str(scope.get("method", "HTTP"))
        attributes: dict[str, Any] = {
            "http.request.method": method,
            "url.path": scope.get("path", ""),
            "url.scheme": scope.get("scheme", "http"),
            "network.protocol.version": scope.get("http_version", "1.1"),
        }
        server, client = scope.get("server"), scope.get("client")
        if server:
            attributes["server.address"], attributes["server.port"] = server[0], server[1]
        if client:
            attributes["client.address"] = client[0]
        if "user-agent" in headers:
            attributes["user_agent.original"] = headers["user-agent"]
        status: int | None = None

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        with tracer.start_as_current_span(
            method,
            context=_PROPAGATOR.extract(headers) if "traceparent" in headers else None,
            kind=SpanKind.SERVER,
            attributes=attributes,
        ) as span:
            try:
                await self.app(scope, receive, send_and_watch)
            finally:
                route = getattr(scope.get("route"), "path", None)
                if route:
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)
                request_id = request_id_var.get()
                if request_id:
                    span.set_attribute("perimeter.request_id", request_id)
                if status is not None:
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        # Server errors only: a 4xx is the caller's mistake, not a failed span.
                        span.set_attribute("error.type", str(status))
                        span.set_status(StatusCode.ERROR)
