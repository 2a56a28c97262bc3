"""The FastAPI application factory. Services come from :func:`build_services` in the lifespan,
or are handed in (the embedded default shares them with its in-process worker)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from starlette.responses import Response

from perimeter.api.errors import error_response, install_error_handlers
from perimeter.api.routes import documents, health, openai_compat, query, web
from perimeter.composition import Services, build_services
from perimeter.settings import Settings, get_settings

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    owns_services = services is None
    effective = settings or (services.settings if services is not None else get_settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        svc = services if services is not None else build_services(effective)
        svc.ensure_ready()
        app.state.services = svc
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

    @app.middleware("http")
    async def limit_body(request: Request, call_next):  # type: ignore[no-untyped-def]
        # Reject oversized uploads before reading them; per-file limits are checked while
        # streaming to disk, since Content-Length may be absent (chunked) or lie.
        length = request.headers.get("content-length")
        limit = effective.api.max_request_bytes
        if length is not None:
            try:
                too_big = int(length) > limit + 1024 * 1024  # multipart framing overhead
            except ValueError:
                return error_response(400, "bad_content_length", "Content-Length is not a number")
            if too_big:
                return error_response(
                    413, "request_too_large", f"request exceeds {limit // (1024 * 1024)} MiB"
                )
        response: Response = await call_next(request)
        return response

    app.include_router(health.router)
    app.include_router(documents.router)
    app.include_router(query.router)
    app.include_router(openai_compat.router)
    app.include_router(web.router)
    return app
