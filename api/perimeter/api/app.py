"""The FastAPI application factory. Services come from :func:`build_services` in the lifespan,
or are handed in (the embedded default shares them with its in-process worker)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from opentelemetry.trace import Tracer
from starlette.responses import Response

from perimeter.api.errors import error_response, install_error_handlers, log_unexpected
from perimeter.api.gate import RequestGate
from perimeter.api.routes import admin as admin_routes
from perimeter.api.routes import (
    collections,
    conversations,
    documents,
    health,
    metrics,
    openai_compat,
    query,
    web,
)
from perimeter.api.routes import reindex as reindex_routes
from perimeter.backends.errors import StoreUnavailable
from perimeter.composition import Services, build_services
from perimeter.logs import REQUEST_ID_HEADER, new_request_id, request_id_var
from perimeter.observability import Metrics
from perimeter.settings import Settings, get_settings
from perimeter.tracing import TracingMiddleware

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    owns_services = services is None
    effective = settings or (services.settings if services is not None else get_settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        svc = services if services is not None else build_services(effective)
        try:
            svc.ensure_ready()
        except Exception as exc:
            # A vector store that is down at startup must not crash-loop the API: it serves
            # /healthz, /readyz says not ready, and queries answer 503 until the store is back
            # (the worker creates the collection when it starts).
            if not _store_unreachable(exc):
                raise
            log.warning("starting without the vector store: %s", exc)
        app.state.services = svc
        app.state.metrics.bind(svc)
        try:
            yield
        finally:
            if owns_services:
                svc.close()

    app = FastAPI(
        title="Perimeter",
        version="0.1.0",
        summary="Grounded, cited answers over your documents; nothing leaves your network.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.state.metrics = Metrics()
    # Innermost of the middlewares (added first), so its early answers (401, 413, 503) still
    # carry a request id and count in the latency metrics; none of those outer layers reads
    # the body, so nothing is read before the gate has authenticated the caller.
    app.add_middleware(
        RequestGate,
        settings=effective,
        services=lambda: getattr(app.state, "services", None),
    )

    @app.middleware("http")
    async def observe_latency(request: Request, call_next):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        status = 500
        try:
            response: Response = await call_next(request)
            status = response.status_code
            return response
        finally:
            # The route template, not the raw path: one series per endpoint, not per document.
            route = request.scope.get("route")
            template = getattr(route, "path", None) or "<unmatched>"
            latency = app.state.metrics.request_seconds
            latency.labels(request.method, template, str(status)).observe(
                time.perf_counter() - started
            )

    if effective.tracing.enabled:
        # Added before request_id, so it runs inside it and its span carries the request id.
        def current_tracer() -> Tracer | None:
            svc: Services | None = getattr(app.state, "services", None)
            return svc.tracing.tracer if svc is not None else None

        app.add_middleware(TracingMiddleware, tracer=current_tracer)

    @app.middleware("http")
    async def request_id(request: Request, call_next):  # type: ignore[no-untyped-def]
        # Every log line and error body of this request carries the id, and the response
        # echoes it for the caller's bug report.
        rid = new_request_id(request.headers.get(REQUEST_ID_HEADER))
        token = request_id_var.set(rid)
        try:
            response: Response = await call_next(request)
        except Exception as exc:
            # Starlette runs the app-wide Exception handler outside every middleware, after
            # this id is gone: answer the 500 here, so its body and header carry this id.
            response = error_response(500, "internal_error", log_unexpected(exc))
        finally:
            request_id_var.reset(token)
        response.headers[REQUEST_ID_HEADER] = rid
        return response

    app.include_router(health.router)
    app.include_router(documents.router)
    app.include_router(collections.router)
    app.include_router(query.router)
    app.include_router(conversations.router)
    app.include_router(admin_routes.router)
    app.include_router(reindex_routes.router)
    app.include_router(openai_compat.router)
    app.include_router(web.router)
    app.include_router(metrics.router)
    return app


def _store_unreachable(exc: BaseException) -> bool:
    # The store adapters turn their client's connection failures into StoreUnavailable, so the
    # API never names a Qdrant type.
    return isinstance(exc, StoreUnavailable)
