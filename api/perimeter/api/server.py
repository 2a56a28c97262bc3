"""How the API is served: uvicorn with the connection-level limits the request gate cannot set.

* ``api.header_timeout_s``: a connection that has not sent a complete request head in time is
  closed. uvicorn has no such timeout (its keep-alive timer only runs between requests), so a
  client sending a header byte at a time held a connection open indefinitely;
* ``api.keep_alive_timeout_s``: idle keep-alive connections are closed;
* ``api.max_connections``: open connections plus requests in progress before new requests are
  answered 503 (uvicorn's ``limit_concurrency``).

Body size and body read timeouts are enforced per request by ``perimeter.api.gate``. Both
``perimeter up`` and ``perimeter api`` serve through :func:`uvicorn_options`; behind a reverse
proxy, set its equivalents too (docs/security.md).
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from perimeter.settings import APISettings, get_settings


class HeaderTimeoutH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, plus a deadline for receiving each request head."""

    header_timeout_s: float = 10.0
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        if self._awaiting_head() and self._header_timer is None:
            # A new request starts on a kept-alive connection: its head is on the clock too.
            self._arm_header_timer()
        super().data_received(data)
        if not self._awaiting_head():
            self._cancel_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _awaiting_head(self) -> bool:
        return self.conn.their_state is h11.IDLE and (
            self.cycle is None or self.cycle.response_complete
        )

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timed_out)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if self._awaiting_head() and not self.transport.is_closing():
            self.transport.close()


def protocol_class(header_timeout_s: float) -> type[HeaderTimeoutH11Protocol]:
    """The protocol with this deployment's header timeout (uvicorn instantiates the class per
    connection and passes no options of ours)."""

    class Configured(HeaderTimeoutH11Protocol):
        pass

    Configured.header_timeout_s = header_timeout_s
    return Configured


class SettingsHeaderTimeoutH11Protocol(HeaderTimeoutH11Protocol):
    """For ``uvicorn --workers N`` (each worker process imports the protocol by reference):
    the header timeout is read from the settings in the worker itself."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.header_timeout_s = get_settings().api.header_timeout_s
        super().connection_made(transport)


def uvicorn_options(api: APISettings, *, multiprocess: bool = False) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run`` / ``uvicorn.Config`` that apply ``api``'s limits."""
    http: type[HeaderTimeoutH11Protocol] = (
        SettingsHeaderTimeoutH11Protocol if multiprocess else protocol_class(api.header_timeout_s)
    )
    return {
        "http": http,
        "timeout_keep_alive": api.keep_alive_timeout_s,
        "limit_concurrency": api.max_connections,
    }
