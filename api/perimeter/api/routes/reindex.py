"""Zero-downtime re-index of an embedding profile (perimeter.ingest.reindex): start, status,
switch, rollback, finish, abort. ``admin`` scope. A re-index covers every document of the
profile, across tenants: it is an operator's action, like the CLI's `perimeter reindex`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict, Field

from perimeter.api.deps import PrincipalDep, ServicesDep
from perimeter.api.errors import APIError
from perimeter.composition import Services
from perimeter.ingest.reindex import JobConflict, ReindexService

router = APIRouter(prefix="/v1/admin/reindex", tags=["reindex"])


class ReindexStart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    profile: str = Field(
        default="default",
        min_length=1,
        max_length=64,
        description="The embedding profile whose collection is rebuilt.",
    )
    embedding_profile: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="Configured embedding profile whose model makes the new collection (a "
        "model upgrade). Unset: the same model (a chunking change).",
    )
    chunk_max_tokens: int | None = Field(default=None, ge=16, le=8192)
    chunk_overlap_tokens: int | None = Field(default=None, ge=0, le=4096)


def _service(services: Services) -> ReindexService:
    if services.reindex is None:
        raise APIError(503, "reindex_unavailable", "this deployment has no re-index service")
    return services.reindex


def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except JobConflict as exc:
        raise APIError(409, "reindex_conflict", str(exc)) from exc
    except LookupError as exc:
        raise APIError(404, "not_found", str(exc).strip("'\"")) from exc
    except ValueError as exc:
        raise APIError(422, "invalid_request", str(exc)) from exc


@router.post("", status_code=status.HTTP_202_ACCEPTED, summary="Start a background re-index")
def start(body: ReindexStart, services: ServicesDep, _principal: PrincipalDep) -> dict[str, Any]:
    service = _service(services)
    job = _call(
        service.start,
        body.profile,
        embedding=body.embedding_profile,
        chunk_max_tokens=body.chunk_max_tokens,
        chunk_overlap_tokens=body.chunk_overlap_tokens,
    )
    return dict(service.status(job.id).as_dict())


@router.get("", summary="Every re-index, newest first")
def list_jobs(services: ServicesDep, _principal: PrincipalDep) -> dict[str, Any]:
    return {"jobs": [s.as_dict() for s in _service(services).jobs()]}


@router.get("/{job_id}", summary="Progress and state of one re-index")
def get_job(job_id: str, services: ServicesDep, _principal: PrincipalDep) -> dict[str, Any]:
    return dict(_call(_service(services).status, job_id).as_dict())


def _step(services: Services, job_id: str, name: str) -> dict[str, Any]:
    service = _service(services)
    _call(getattr(service, name), job_id)
    return dict(service.status(job_id).as_dict())


@router.post("/{job_id}/resume", summary="Continue a running re-index's copy in this process")
def resume(job_id: str, services: ServicesDep, _principal: PrincipalDep) -> dict[str, Any]:
    return _step(services, job_id, "resume")


@router.post("/{job_id}/switch", summary="Serve the new collection (atomic)")
def switch(job_id: str, services: ServicesDep, _principal: PrincipalDep) -> dict[str, Any]:
    return _step(services, job_id, "switch")


@router.post("/{job_id}/rollback", summary="Serve the old collection again")
def rollback(job_id: str, services: ServicesDep, _principal: PrincipalDep) -> dict[str, Any]:
    return _step(services, job_id, "rollback")


@router.post("/{job_id}/finish", summary="Drop the old collection (no rollback after)")
def finish(job_id: str, services: ServicesDep, _principal: PrincipalDep) -> dict[str, Any]:
    return _step(services, job_id, "finish")


@router.post("/{job_id}/abort", summary="Stop and drop the new collection")
def abort(job_id: str, services: ServicesDep, _principal: PrincipalDep) -> dict[str, Any]:
    return _step(services, job_id, "abort")
