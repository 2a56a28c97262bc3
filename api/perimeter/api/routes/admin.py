"""Admin endpoints (``admin`` scope): the caller's own tenant's audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from perimeter.api.deps import PrincipalDep, ServicesDep
from perimeter.text_safety import scrub

router = APIRouter(prefix="/v1/admin", tags=["admin"])


class AuditEntryOut(BaseModel):
    id: int
    at: datetime
    tenant_id: str
    actor: str
    auth_method: str
    action: str
    document_ids: list[str]
    point_ids: list[str]
    details: dict[str, Any]


class AuditList(BaseModel):
    entries: list[AuditEntryOut]
    limit: int


@router.get(
    "/audit",
    response_model=AuditList,
    summary="The audit log of the caller's tenant, newest first (admin scope)",
)
def audit(
    services: ServicesDep,
    principal: PrincipalDep,
    action: Annotated[str | None, Query(max_length=32)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after_id: Annotated[
        int | None, Query(ge=0, le=2**62, description="Oldest first, after this id.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AuditList:
    # An admin sees its own tenant only; the operator's cross-tenant view is the CLI.
    entries = services.audit.entries(
        tenant_id=principal.tenant_id,
        action=action,
        since=since,
        until=until,
        after_id=after_id,
        limit=limit,
    )
    return AuditList(
        # scrub: one stored bad string must not make the tenant's audit log unreadable.
        entries=[AuditEntryOut(**scrub(e.as_dict())) for e in entries],
        limit=limit,
    )
