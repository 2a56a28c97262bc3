"""Turn a request's credentials into a :class:`Principal`, per the configured mode.

* ``disabled``: everyone is the default tenant with every scope and no group restriction.
* ``api_key``: ``Authorization: Bearer pmk_...`` or ``X-API-Key: pmk_...``.
* ``oidc``: ``Authorization: Bearer <JWT>``; API keys too when ``oidc_accept_api_keys``.

Every failure to authenticate is one 401 with a generic message (which check failed is logged,
not told), so a caller cannot probe which keys exist.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from perimeter.auth.api_keys import ApiKeyStore, looks_like_api_key
from perimeter.auth.oidc import InvalidToken, JwksSource, JwksUnavailable, OidcVerifier
from perimeter.auth.policy import required_scopes
from perimeter.auth.principal import (
    SCOPES,
    InvalidGroups,
    Principal,
    parse_groups,
    valid_tenant,
)
from perimeter.settings import AuthSettings
from perimeter.text_safety import scrub

log = logging.getLogger(__name__)


class AuthError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    @property
    def headers(self) -> dict[str, str] | None:
        if self.status == 401:
            return {"WWW-Authenticate": 'Bearer realm="perimeter"'}
        if self.status == 403:
            return {"WWW-Authenticate": 'Bearer realm="perimeter", error="insufficient_scope"'}
        return None


def _unauthenticated(message: str = "missing or invalid credentials") -> AuthError:
    return AuthError(401, "unauthenticated", message)


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The presented credential: ``Authorization: Bearer`` first, then ``X-API-Key``."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, value = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return None
    key = headers.get("x-api-key")
    return key.strip() if key and key.strip() else None


class Authenticator:
    def __init__(
        self,
        settings: AuthSettings,
        keys: ApiKeyStore,
        oidc: OidcVerifier | None = None,
    ) -> None:
        self._settings = settings
        self._keys = keys
        self._oidc = oidc

    @classmethod
    def from_settings(cls, settings: AuthSettings, keys: ApiKeyStore) -> Authenticator:
        oidc = None
        if settings.mode == "oidc":
            if not settings.oidc_issuer or not settings.oidc_audience:
                raise ValueError(
                    "auth.mode=oidc needs PERIMETER_AUTH__OIDC_ISSUER and "
                    "PERIMETER_AUTH__OIDC_AUDIENCE"
                )
            if (settings.oidc_jwks_file is None) == (settings.oidc_jwks_url is None):
                raise ValueError(
                    "auth.mode=oidc needs exactly one of PERIMETER_AUTH__OIDC_JWKS_FILE or "
                    "PERIMETER_AUTH__OIDC_JWKS_URL"
                )
            source = JwksSource(
                file=settings.oidc_jwks_file,
                url=settings.oidc_jwks_url,
                cache_s=settings.oidc_jwks_cache_s,
            )
            oidc = OidcVerifier(
                source,
                issuer=settings.oidc_issuer,
                audience=settings.oidc_audience,
                algorithms=settings.oidc_algorithms,
                leeway_s=settings.oidc_leeway_s,
                subject_claim=settings.oidc_subject_claim,
            )
        return cls(settings, keys, oidc)

    @property
    def mode(self) -> str:
        return self._settings.mode

    def authenticate(self, headers: Mapping[str, str]) -> Principal:
        mode = self._settings.mode
        if mode == "disabled":
            return Principal(tenant_id=self._settings.default_tenant)
        token = bearer_token(headers)
        if token is None:
            raise _unauthenticated("credentials required: Authorization: Bearer <key or token>")
        if mode == "api_key" or (
            mode == "oidc" and self._settings.oidc_accept_api_keys and looks_like_api_key(token)
        ):
            return self._from_api_key(token)
        if mode == "oidc":
            return self._from_jwt(token)
        raise AssertionError(f"unknown auth mode {mode!r}")

    def authorize(self, principal: Principal, method: str, route_path: str | None) -> None:
        if self._settings.mode == "disabled":
            return
        needed = required_scopes(method, route_path)
        if needed is None:
            raise AuthError(403, "forbidden", "this endpoint has no access policy")
        if not principal.has_any_scope(needed):
            raise AuthError(
                403,
                "insufficient_scope",
                f"this endpoint needs the {' or '.join(sorted(needed))} scope",
            )

    def _from_api_key(self, token: str) -> Principal:
        record = self._keys.verify(token)
        if record is None:
            log.info("refused API key (unknown, wrong secret, revoked or expired)")
            raise _unauthenticated()
        return Principal(
            tenant_id=record.tenant_id,
            groups=record.groups,
            scopes=record.scopes,
            actor=f"key:{record.id}",
            auth_method="api_key",
        )

    def _from_jwt(self, token: str) -> Principal:
        assert self._oidc is not None
        s = self._settings
        try:
            verified = self._oidc.verify(token)
        except InvalidToken as exc:
            log.info("refused OIDC token: %s", exc)
            raise _unauthenticated() from exc
        except JwksUnavailable as exc:
            log.warning("OIDC keys unavailable: %s", exc)
            raise AuthError(
                503, "auth_unavailable", "the identity provider's keys cannot be read"
            ) from exc
        claims = verified.claims
        tenant = claims.get(s.oidc_tenant_claim, s.oidc_default_tenant)
        if not isinstance(tenant, str) or not valid_tenant(tenant):
            raise AuthError(403, "no_tenant", "the token names no valid tenant")
        return Principal(
            tenant_id=tenant,
            groups=_claim_groups(claims.get(s.oidc_groups_claim)),
            scopes=_claim_scopes(claims.get(s.oidc_scopes_claim), s.oidc_default_scopes),
            # scrub: a JSON claim may escape a lone surrogate, which no text column can store.
            actor=scrub(f"oidc:{verified.subject}")[:255],
            auth_method="oidc",
        )


def _claim_groups(value: Any) -> list[str]:
    """A missing groups claim means no groups (public documents only), never "all groups"."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise AuthError(403, "invalid_groups", "the token's groups claim is not a list")
    # Names our ACL cannot represent are dropped (they cannot match any stored document).
    usable = [g for g in value if isinstance(g, str)]
    try:
        return parse_groups(usable)
    except InvalidGroups:
        kept: list[str] = []
        for g in usable:
            try:
                kept.extend(parse_groups([g]))
            except InvalidGroups:
                continue
        return sorted(set(kept))[:64]


def _claim_scopes(value: Any, default: list[str]) -> frozenset[str]:
    if value is None:
        values: list[str] = list(default)
    elif isinstance(value, str):
        values = value.split()
    elif isinstance(value, list):
        values = [v for v in value if isinstance(v, str)]
    else:
        values = []
    # Other scopes the IdP issues (openid, profile, ...) are simply not ours.
    return frozenset(v for v in values if v in SCOPES)
