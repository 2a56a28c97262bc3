"""FastAPI dependencies with Annotated aliases. Services come from the app's lifespan."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from perimeter.api.errors import APIError
from perimeter.api.gate import PRINCIPAL_SCOPE_KEY
from perimeter.auth.principal import Principal
from perimeter.auth.service import AuthError
from perimeter.composition import Services

__all__ = ["Principal", "PrincipalDep", "ServicesDep", "get_principal", "get_services"]


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def get_principal(
    request: Request, services: Annotated[Services, Depends(get_services)]
) -> Principal:
    """Authenticate the caller (settings.auth.mode), then check the endpoint's scope policy
    (perimeter/auth/policy.py). 401 without valid credentials, 403 without the scope.

    The request gate (perimeter/api/gate.py) has usually authenticated the caller already,
    before the body was read; its answer is reused rather than paid for twice."""
    route = request.scope.get("route")
    try:
        gated = request.scope.get(PRINCIPAL_SCOPE_KEY)
        principal = (
            gated if isinstance(gated, Principal) else services.auth.authenticate(request.headers)
        )
        services.auth.authorize(principal, request.method, getattr(route, "path", None))
    except AuthError as exc:
        raise APIError(exc.status, exc.code, exc.message, headers=exc.headers) from exc
    return principal


ServicesDep = Annotated[Services, Depends(get_services)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
