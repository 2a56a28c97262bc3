"""OIDC bearer tokens (JWTs) checked against the identity provider's published keys (JWKS).

Checked: signature (asymmetric algorithms only, from the configured list), ``iss``, ``aud``,
``exp`` (required), ``nbf``/``iat`` when present, with a small leeway. The JWKS comes from a
file, or from a URL that must be inside the perimeter (``perimeter doctor`` checks its host);
a URL's keys are cached and refetched at most once per ``min_refetch_s`` when a token names an
unknown ``kid`` (key rotation), so a flood of forged tokens cannot turn into a flood of fetches.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


class InvalidToken(Exception):
    """The token is not acceptable (the API answers 401; the message is safe to show)."""


class JwksUnavailable(Exception):
    """The JWKS URL cannot be read (the API answers 503)."""


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    subject: str
    claims: dict[str, Any]


def _fetch_url(url: str, timeout_s: float) -> dict[str, Any]:
    import httpx

    response = httpx.get(url, timeout=timeout_s, follow_redirects=False)
    response.raise_for_status()
    data = response.json()
    if not isinstance(data, dict):
        raise ValueError("JWKS is not a JSON object")
    return data


class JwksSource:
    """Keys from a file (read once, re-read when it changes) or a URL (cached)."""

    def __init__(
        self,
        file: Path | None = None,
        url: str | None = None,
        cache_s: float = 300.0,
        min_refetch_s: float = 30.0,
        fetch: Callable[[str, float], dict[str, Any]] = _fetch_url,
        jwks: dict[str, Any] | None = None,
    ) -> None:
        if sum(x is not None for x in (file, url, jwks)) != 1:
            raise ValueError("give exactly one of a JWKS file, a JWKS URL or a JWKS document")
        self._file = file
        self._url = url
        self._cache_s = cache_s
        self._min_refetch_s = min_refetch_s
        self._fetch = fetch
        self._lock = threading.Lock()
        self._keys: dict[str | None, tuple[Any, str | None]] = {}
        self._loaded_at = 0.0
        self._file_mtime: float | None = None
        if jwks is not None:
            self._keys = _keys_of(jwks)
            self._loaded_at = float("inf")

    def key_for(self, kid: str | None) -> tuple[Any, str | None]:
        with self._lock:
            self._refresh(force=False)
            key = self._lookup(kid)
            if key is None and self._may_refetch():
                self._refresh(force=True)
                key = self._lookup(kid)
        if key is None:
            raise InvalidToken("the token's signing key is not among the identity provider's keys")
        return key

    def _lookup(self, kid: str | None) -> tuple[Any, str | None] | None:
        if kid is not None:
            return self._keys.get(kid)
        # No kid in the header: acceptable only when the set holds exactly one key.
        return next(iter(self._keys.values())) if len(self._keys) == 1 else None

    def _may_refetch(self) -> bool:
        if self._file is not None:
            return False
        return self._url is not None and time.monotonic() - self._loaded_at >= self._min_refetch_s

    def _refresh(self, force: bool) -> None:
        if self._file is not None:
            try:
                mtime = self._file.stat().st_mtime
            except OSError as exc:
                raise JwksUnavailable(f"JWKS file {self._file} cannot be read") from exc
            if self._file_mtime != mtime:
                try:
                    self._keys = _keys_of(json.loads(self._file.read_text("utf-8")))
                except (OSError, ValueError) as exc:
                    raise JwksUnavailable(f"JWKS file {self._file} is not a valid JWKS") from exc
                self._file_mtime = mtime
            return
        if self._url is None:
            return
        if not force and self._keys and time.monotonic() - self._loaded_at < self._cache_s:
            return
        try:
            self._keys = _keys_of(self._fetch(self._url, 5.0))
        except Exception as exc:
            if self._keys and not force:
                return  # keep serving with the last good keys while the IdP is briefly down
            raise JwksUnavailable("the identity provider's JWKS cannot be fetched") from exc
        finally:
            self._loaded_at = time.monotonic()


def _keys_of(jwks: dict[str, Any]) -> dict[str | None, tuple[Any, str | None]]:
    import jwt

    keys: dict[str | None, tuple[Any, str | None]] = {}
    for entry in jwks.get("keys", []):
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        try:
            jwk = jwt.PyJWK(entry)
        except Exception:
            continue  # an unsupported key type in the set must not disable the others
        # The set's own "alg" (optional in a JWK) pins the key to one algorithm.
        keys[entry.get("kid")] = (jwk, entry.get("alg"))
    return keys


class OidcVerifier:
    def __init__(
        self,
        source: JwksSource,
        issuer: str,
        audience: str,
        algorithms: list[str],
        leeway_s: int = 30,
        subject_claim: str = "sub",
    ) -> None:
        bad = set(algorithms) - ASYMMETRIC_ALGORITHMS
        if bad or not algorithms:
            # 'none' and HMAC algorithms would let anyone who knows the public key sign tokens.
            raise ValueError(
                f"unsupported OIDC algorithm(s) {sorted(bad)}; use asymmetric ones such as RS256"
            )
        self._source = source
        self._issuer = issuer
        self._audience = audience
        self._algorithms = list(algorithms)
        self._leeway_s = leeway_s
        self._subject_claim = subject_claim

    def verify(self, token: str) -> VerifiedToken:
        import jwt

        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken("malformed token") from exc
        alg = header.get("alg")
        if alg not in self._algorithms:
            raise InvalidToken(f"token algorithm {alg!r} is not accepted")
        kid = header.get("kid")
        jwk, pinned_alg = self._source.key_for(kid if isinstance(kid, str) else None)
        if pinned_alg is not None and pinned_alg != alg:
            raise InvalidToken("token algorithm does not match its key")
        try:
            claims = jwt.decode(
                token,
                key=jwk.key,
                algorithms=[alg],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway_s,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise InvalidToken("token expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise InvalidToken("token audience is not accepted") from exc
        except jwt.InvalidIssuerError as exc:
            raise InvalidToken("token issuer is not accepted") from exc
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"invalid token ({type(exc).__name__})") from exc
        subject = claims.get(self._subject_claim)
        if not isinstance(subject, str) or not subject:
            raise InvalidToken(f"token has no {self._subject_claim!r} claim")
        return VerifiedToken(subject=subject, claims=claims)
