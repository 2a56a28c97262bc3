"""The request gate: what every request must pass before the application reads its body.

A pure ASGI middleware (``BaseHTTPMiddleware`` would hand the body to the app regardless), so
that, in this order and before a single ``receive()``:

1. a declared ``Content-Length`` that is not a number is a 400;
2. the caller is authenticated from the headers alone, on every path but the public ones
   (:data:`PUBLIC_PATHS`): an unauthenticated request costs its headers, whatever its body. A
   route added later is covered by default; the route's scope check stays in
   ``perimeter.api.deps`` (it needs the matched route);
3. ``/metrics`` is checked against ``api.metrics_access`` / ``api.metrics_token``;
4. a declared size above the limit is a 413 (multipart uploads: ``api.max_request_bytes`` plus
   framing; any other body: ``api.max_json_bytes``);
5. an upload finds a free slot of ``api.max_concurrent_uploads`` or is a 503.

Then, while the app reads the body, the gate counts it (chunked bodies have no declared size,
and a Content-Length may lie) and times it (``api.body_idle_timeout_s`` per piece,
``api.body_timeout_s`` in all): past a limit the read raises, and the client gets a 413 or 408
with ``Connection: close`` (the server stops reading the rest). JSON bodies (bounded by
``max_json_bytes``) are read whole here first and refused with a 400 when they are not UTF-8 or
escape a lone surrogate or NUL (:func:`perimeter.text_safety.json_body_problem`), so no route
ever sees such a string.

Header read timeouts and the connection cap live in the server (``perimeter.api.server``),
since they act before there is a request to gate.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from perimeter.api.errors import error_response
from perimeter.auth.service import AuthError, bearer_token
from perimeter.text_safety import json_body_problem

if TYPE_CHECKING:
    from perimeter.auth.principal import Principal
    from perimeter.composition import Services
    from perimeter.settings import APISettings, Settings

log = logging.getLogger(__name__)

# The scope key under which the gate leaves the authenticated caller for perimeter.api.deps.
PRINCIPAL_SCOPE_KEY = "perimeter.principal"

# Paths anyone may call: liveness/readiness probes, the web workspace shell (it holds no data;
# its API calls carry the key) and the OpenAPI description. Everything else authenticates.
PUBLIC_PATHS: frozenset[str] = frozenset(
    {"/healthz", "/readyz", "/", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)
PUBLIC_PREFIXES: tuple[str, ...] = ("/static/",)
METRICS_PATH = "/metrics"
# Multipart framing (boundaries, part headers, the small form fields) on top of the files.
MULTIPART_OVERHEAD_BYTES = 1024 * 1024


class BodyLimitError(StarletteHTTPException):
    """Raised from ``receive()`` when a body passes a limit. An ``HTTPException`` so that
    FastAPI's body parsing re-raises it instead of turning it into "error parsing the body",
    and the app's handler answers it in the one error shape."""

    def __init__(self, status_code: int, code: str, detail: str) -> None:
        super().__init__(status_code=status_code, detail=detail, headers={"Connection": "close"})
        self.code = code


# The OpenAI-compatible routes answer errors in OpenAI's shape (their clients read it); the
# gate's early answers on them do too.
OPENAI_PATHS: frozenset[str] = frozenset({"/v1/chat/completions", "/v1/models"})
OPENAI_PREFIXES: tuple[str, ...] = ("/v1/models/",)


def gate_error(
    path: str, status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The error answer of the gate, in the shape the path's clients expect."""
    if path in OPENAI_PATHS or path.startswith(OPENAI_PREFIXES):
        kind = "invalid_request_error" if status < 500 else "server_error"
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        return JSONResponse(body, status_code=status, headers=headers)
    return error_response(status, code, message, headers=headers)


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def _is_multipart(headers: Headers) -> bool:
    return headers.get("content-type", "").lower().startswith("multipart/")


def _is_json(headers: Headers) -> bool:
    # No Content-Type counts: FastAPI parses such a body as JSON too.
    media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return media in ("", "application/json") or media.endswith("+json")


@dataclass
class _BodyState:
    limit: int
    idle_timeout_s: float
    deadline: float
    received: int = 0
    done: bool = False
    on_done: list[Callable[[], None]] = field(default_factory=list)

    def finish(self) -> None:
        if not self.done:
            self.done = True
            for callback in self.on_done:
                callback()
            self.on_done.clear()


class RequestGate:
    def __init__(
        self,
        app: ASGIApp,
        settings: Settings,
        services: Callable[[], Services | None],
    ) -> None:
        self.app = app
        self._settings = settings
        self._services = services
        self._uploads_in_flight = 0

    def _api_settings(self, services: Services | None) -> APISettings:
        # The services' settings are read per request (tests and operators may change limits on
        # a running app); before the lifespan has run there are only the app's own.
        return (services.settings if services is not None else self._settings).api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        services = self._services()
        limits = self._api_settings(services)
        headers = Headers(scope=scope)
        path: str = scope["path"]
        declared = headers.get("content-length")
        has_body = (
            declared not in (None, "0") or "chunked" in headers.get("transfer-encoding", "").lower()
        )

        async def reject(
            status: int, code: str, message: str, extra: dict[str, str] | None = None
        ) -> None:
            # Connection: close when a body was announced: it is never read, so the connection
            # cannot carry another request.
            out_headers = dict(extra or {})
            if has_body:
                out_headers["Connection"] = "close"
            response = gate_error(path, status, code, message, out_headers or None)
            await response(scope, receive, send)

        length: int | None = None
        if declared is not None:
            try:
                length = int(declared)
                if length < 0:
                    raise ValueError(declared)
            except ValueError:
                await reject(400, "bad_content_length", "Content-Length is not a number")
                return

        if services is None:
            # Before the lifespan has built the services there is nobody to authenticate
            # against: closed, except for the public probes.
            if not is_public(path):
                await reject(503, "starting", "the server is starting; try again shortly")
                return
        else:
            try:
                principal = await self._authenticate(services, path, headers)
            except AuthError as exc:
                await reject(exc.status, exc.code, exc.message, exc.headers)
                return
            if principal is not None:
                scope[PRINCIPAL_SCOPE_KEY] = principal

        multipart = _is_multipart(headers)
        if multipart:
            limit = limits.max_request_bytes + MULTIPART_OVERHEAD_BYTES
            what = f"request exceeds {limits.max_request_bytes // (1024 * 1024)} MiB"
        else:
            limit = limits.max_json_bytes
            what = f"request body exceeds {limits.max_json_bytes} bytes"
        if length is not None and length > limit:
            await reject(413, "request_too_large", what)
            return
        if not has_body:
            await self.app(scope, receive, send)
            return

        state = _BodyState(
            limit=limit,
            idle_timeout_s=limits.body_idle_timeout_s,
            deadline=time.monotonic() + limits.body_timeout_s,
        )
        if multipart:
            if self._uploads_in_flight >= limits.max_concurrent_uploads:
                await reject(
                    503,
                    "too_many_uploads",
                    f"{limits.max_concurrent_uploads} uploads are already in transfer; "
                    "retry shortly",
                    {"Retry-After": "5"},
                )
                return
            self._uploads_in_flight += 1
            state.on_done.append(self._release_upload)

        body_receive = self._counting_receive(receive, state, what)
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            if _is_json(headers):
                body_receive = await self._checked_json(body_receive)
            await self.app(scope, body_receive, tracking_send)
        except BodyLimitError as exc:
            # Raised outside the app's own handlers (e.g. while the gate read a JSON body).
            if started:
                raise
            response = gate_error(
                path, exc.status_code, exc.code, exc.detail, {"Connection": "close"}
            )
            await response(scope, receive, send)
        except _RejectedBody as exc:
            await gate_error(path, 400, "invalid_text", exc.message)(scope, receive, send)
        finally:
            state.finish()

    async def _authenticate(
        self, services: Services, path: str, headers: Headers
    ) -> Principal | None:
        """The caller, or None on a public path; raises AuthError."""
        if path == METRICS_PATH:
            await self._metrics_access(services, headers)
            return None
        if is_public(path):
            return None
        if services.auth.mode == "disabled":
            return services.auth.authenticate(headers)
        # Key lookups hit the database and OIDC may fetch keys: off the event loop.
        principal: Principal = await anyio.to_thread.run_sync(services.auth.authenticate, headers)
        return principal

    async def _metrics_access(self, services: Services, headers: Headers) -> None:
        api = services.settings.api
        token = api.metrics_token.get_secret_value() if api.metrics_token else None
        presented = bearer_token(headers)
        if (
            token is not None
            and presented is not None
            and hmac.compare_digest(presented.encode(), token.encode())
        ):
            return None
        if api.metrics_access == "public":
            return None
        if services.auth.mode == "disabled":
            if token is None:
                return None  # nobody is authenticated anywhere; the port is the boundary
            raise AuthError(401, "unauthenticated", "missing or invalid credentials")
        principal: Principal = await anyio.to_thread.run_sync(services.auth.authenticate, headers)
        if not principal.has_any_scope({"admin"}):
            raise AuthError(403, "insufficient_scope", "this endpoint needs the admin scope")
        return None

    def _release_upload(self) -> None:
        self._uploads_in_flight -= 1

    @staticmethod
    def _counting_receive(receive: Receive, state: _BodyState, what: str) -> Receive:
        async def guarded() -> Message:
            if state.done:
                return await receive()
            remaining = state.deadline - time.monotonic()
            if remaining <= 0:
                state.finish()
                raise BodyLimitError(408, "request_timeout", "the request body took too long")
            try:
                message = await asyncio.wait_for(
                    receive(), timeout=min(state.idle_timeout_s, remaining)
                )
            except TimeoutError:
                state.finish()
                raise BodyLimitError(
                    408, "request_timeout", "the request body arrived too slowly"
                ) from None
            if message["type"] == "http.request":
                state.received += len(message.get("body", b""))
                if state.received > state.limit:
                    state.finish()
                    raise BodyLimitError(413, "request_too_large", what)
                if not message.get("more_body", False):
                    state.finish()
            else:  # http.disconnect
                state.finish()
            return message

        return guarded

    @staticmethod
    async def _checked_json(receive: Receive) -> Receive:
        """Read a (bounded) JSON body whole, refuse invalid text, and replay it to the app."""
        parts: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            parts.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(parts)
        problem = json_body_problem(body)
        if problem is not None:
            raise _RejectedBody(problem)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay


class _RejectedBody(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def principal_of(scope: Scope) -> Any:
    """The caller the gate authenticated for this request, if any."""
    return scope.get(PRINCIPAL_SCOPE_KEY)
