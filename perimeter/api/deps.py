"""FastAPI dependencies with Annotated aliases. Services come from the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from perimeter.composition import Services
from perimeter.domain import DEFAULT_TENANT


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling. Until API keys land (see docs), every caller is the default tenant."""

    tenant_id: str
    groups: list[str] | None = None


def get_principal() -> Principal:
    return Principal(tenant_id=DEFAULT_TENANT)


ServicesDep = Annotated[Services, Depends(get_services)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
