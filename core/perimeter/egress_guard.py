"""An in-process egress guard: refuse, and record, every attempt to reach a non-loopback host.

It patches the socket layer that every Python network client ends in: ``socket.socket.connect``
/ ``connect_ex`` / ``sendto`` (TCP and UDP), ``socket.create_connection``, and the name lookups
(``getaddrinfo``, ``gethostbyname``, ``gethostbyname_ex``), because resolving a name is already
a packet to a DNS server. Loopback addresses, ``localhost`` and Unix sockets are allowed; all
else raises ``OSError`` and is appended to :attr:`EgressGuard.attempts` with the caller's stack.

The zero-egress tests install it around a whole ingest + query run; an operator can install it
in any Perimeter process with ``PERIMETER_EGRESS_GUARD_REPORT=/path`` and a ``sitecustomize``
(see docs/security.md). The patch is process-wide (every thread), and reversible.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


@dataclass(frozen=True, slots=True)
class Attempt:
    function: str
    host: str
    port: int | None
    thread: str
    stack: str

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.function}({self.host}{port}) in thread {self.thread}\n{self.stack}"


def is_local_host(host: Any) -> bool:
    """Loopback address, a localhost name, or not a network host at all."""
    if host is None or host == "":
        # getaddrinfo(None, port) is the wildcard/loopback lookup used to bind, not a peer.
        return True
    if isinstance(host, bytes):
        host = host.decode("ascii", errors="replace")
    if not isinstance(host, str):
        return False
    name = host.strip("[]").split("%", 1)[0].lower().rstrip(".")
    if name in _LOCAL_NAMES or name.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _address_host_port(address: Any) -> tuple[Any, int | None] | None:
    """(host, port) of an AF_INET/AF_INET6 address; None for Unix sockets and the like."""
    if isinstance(address, tuple) and len(address) >= 2:
        port = address[1] if isinstance(address[1], int) else None
        return address[0], port
    return None


class EgressBlocked(ConnectionRefusedError):
    """Raised instead of connecting out. A ConnectionRefusedError, so clients fail as they
    would against a closed port, without retry storms."""


class EgressGuard:
    def __init__(
        self,
        allow: Callable[[Any], bool] = is_local_host,
        on_attempt: Callable[[EgressGuard], None] | None = None,
    ) -> None:
        self._allow = allow
        self._on_attempt = on_attempt
        self._lock = threading.Lock()
        self._originals: dict[str, Any] = {}
        self.attempts: list[Attempt] = []

    # -- recording ---------------------------------------------------------------------------
    def _refuse(self, function: str, host: Any, port: int | None) -> EgressBlocked:
        stack = "".join(traceback.format_stack(limit=14)[:-2])
        attempt = Attempt(function, str(host), port, threading.current_thread().name, stack)
        with self._lock:
            self.attempts.append(attempt)
        if self._on_attempt is not None:
            self._on_attempt(self)
        return EgressBlocked(f"egress blocked by Perimeter's guard: {function}({host}, {port})")

    def _check_address(self, function: str, sock: socket.socket, address: Any) -> None:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return
        host_port = _address_host_port(address)
        if host_port is not None and not self._allow(host_port[0]):
            raise self._refuse(function, host_port[0], host_port[1])

    # -- install / uninstall ---------------------------------------------------------------
    def install(self) -> EgressGuard:
        if self._originals:
            return self
        guard = self
        sock_cls = socket.socket
        originals: dict[str, Any] = {
            "connect": sock_cls.connect,
            "connect_ex": sock_cls.connect_ex,
            "sendto": sock_cls.sendto,
            "create_connection": socket.create_connection,
            "getaddrinfo": socket.getaddrinfo,
            "gethostbyname": socket.gethostbyname,
            "gethostbyname_ex": socket.gethostbyname_ex,
        }
        self._originals = originals

        def connect(self: socket.socket, address: Any) -> None:
            guard._check_address("connect", self, address)
            originals["connect"](self, address)

        def connect_ex(self: socket.socket, address: Any) -> int:
            guard._check_address("connect_ex", self, address)
            return int(originals["connect_ex"](self, address))

        def sendto(self: socket.socket, data: Any, *args: Any) -> int:
            guard._check_address("sendto", self, args[-1] if args else None)
            return int(originals["sendto"](self, data, *args))

        def create_connection(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
            host_port = _address_host_port(address)
            if host_port is not None and not guard._allow(host_port[0]):
                raise guard._refuse("create_connection", host_port[0], host_port[1])
            conn: socket.socket = originals["create_connection"](address, *args, **kwargs)
            return conn

        def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
            if not guard._allow(host):
                err = guard._refuse("getaddrinfo", host, port if isinstance(port, int) else None)
                raise socket.gaierror(socket.EAI_NONAME, str(err))
            return originals["getaddrinfo"](host, port, *args, **kwargs)

        def gethostbyname(host: Any) -> str:
            if not guard._allow(host):
                err = guard._refuse("gethostbyname", host, None)
                raise socket.gaierror(socket.EAI_NONAME, str(err))
            return str(originals["gethostbyname"](host))

        def gethostbyname_ex(host: Any) -> Any:
            if not guard._allow(host):
                err = guard._refuse("gethostbyname_ex", host, None)
                raise socket.gaierror(socket.EAI_NONAME, str(err))
            return originals["gethostbyname_ex"](host)

        sock_cls.connect = connect  # type: ignore[method-assign, assignment]
        sock_cls.connect_ex = connect_ex  # type: ignore[method-assign, assignment]
        sock_cls.sendto = sendto  # type: ignore[method-assign, assignment]
        socket.create_connection = create_connection  # type: ignore[assignment]
        socket.getaddrinfo = getaddrinfo
        socket.gethostbyname = gethostbyname
        socket.gethostbyname_ex = gethostbyname_ex
        return self

    def uninstall(self) -> None:
        o = self._originals
        if not o:
            return
        socket.socket.connect = o["connect"]  # type: ignore[method-assign]
        socket.socket.connect_ex = o["connect_ex"]  # type: ignore[method-assign]
        socket.socket.sendto = o["sendto"]  # type: ignore[method-assign]
        socket.create_connection = o["create_connection"]
        socket.getaddrinfo = o["getaddrinfo"]
        socket.gethostbyname = o["gethostbyname"]
        socket.gethostbyname_ex = o["gethostbyname_ex"]
        self._originals = {}

    def report(self) -> str:
        with self._lock:
            attempts = list(self.attempts)
        if not attempts:
            return "no outbound connection attempts"
        return f"{len(attempts)} outbound attempt(s):\n" + "\n".join(str(a) for a in attempts)

    def write_report(self, path: Path) -> None:
        with self._lock:
            data = [asdict(a) for a in self.attempts]
        path.write_text(json.dumps({"pid": os.getpid(), "attempts": data}), "utf-8")


@contextmanager
def egress_guard(allow: Callable[[Any], bool] = is_local_host) -> Iterator[EgressGuard]:
    guard = EgressGuard(allow).install()
    try:
        yield guard
    finally:
        guard.uninstall()


def install_from_env() -> EgressGuard | None:
    """For a ``sitecustomize``: when ``PERIMETER_EGRESS_GUARD_REPORT`` names a folder, guard
    this process and write ``egress-<pid>.json`` there at exit (child processes included, as
    they inherit the variable)."""
    folder = os.environ.get("PERIMETER_EGRESS_GUARD_REPORT")
    if not folder:
        return None
    import atexit

    target = Path(folder) / f"egress-{os.getpid()}.json"
    # Written at start, on every attempt and at exit: a killed process still leaves its record.
    guard = EgressGuard(on_attempt=lambda g: g.write_report(target)).install()
    guard.write_report(target)
    atexit.register(guard.write_report, target)
    return guard
