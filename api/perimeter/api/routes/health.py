"""Liveness and readiness, used by the compose healthchecks and orchestrators."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from perimeter.api.deps import ServicesDep

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Every dependency answers")
def readyz(services: ServicesDep) -> Any:
    checks = {
        "metadata_db": services.metadata.ping(),
        "vector_store": services.store.ping(),
        "broker": services.queue.ping(),
        "llm": services.llm.ping(),
        "embedder_loaded": bool(getattr(services.embedder, "is_loaded", True)),
    }
    ready = all(checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks},
        status_code=200 if ready else 503,
    )
