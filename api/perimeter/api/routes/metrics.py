"""Prometheus scrape endpoint."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from perimeter.observability import Metrics

router = APIRouter(tags=["health"])


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    registry: Metrics = request.app.state.metrics
    body, content_type = registry.render()
    return Response(body, media_type=content_type)
