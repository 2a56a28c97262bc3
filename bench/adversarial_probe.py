"""What an unauthenticated or oversized request costs the API server (issue #19, finding 1-2).

Starts the real app (API keys on, embedded default services, no worker) under uvicorn with the
server options of ``perimeter api``, in this process, and measures on the server's side:

* bytes the application was handed through ``receive()``;
* peak growth of the temp folder where multipart parsing spools (unnamed temp files included);
* peak growth of the process RSS;
* for slow connections: how many are still open after a while.

``--no-gate`` replaces the request gate by a pass-through and uses uvicorn's plain protocol,
which reproduces the probe's findings for comparison in the same run.

    .venv/bin/python bench/adversarial_probe.py [--no-gate] [--mib 256] [--json-mib 128]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

MiB = 1024 * 1024


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def folder_bytes(folder: Path) -> int:
    total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    for fd in Path("/proc/self/fd").iterdir():
        try:
            if os.readlink(fd).startswith(str(folder)):
                total += os.stat(fd).st_size
        except OSError:
            continue
    return total


class Sampler:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.base_rss = rss_bytes()
        self.peak_rss = self.base_rss
        self.peak_tmp = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_rss = max(self.peak_rss, rss_bytes())
            self.peak_tmp = max(self.peak_tmp, folder_bytes(self.folder))
            time.sleep(0.02)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join()


def read_status(sock: socket.socket, timeout_s: float) -> int:
    sock.settimeout(timeout_s)
    data = b""
    try:
        while b"\r\n" not in data:
            piece = sock.recv(4096)
            if not piece:
                return 0
            data += piece
    except OSError:
        return 0
    return int(data.split(b" ", 2)[1])


def send_chunked(port: int, path: str, ctype: str, auth: str | None, total: int) -> int:
    piece = b"a" * (256 * 1024)
    frame = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\n"
    if auth:
        head += f"Authorization: Bearer {auth}\r\n"
    head += "Transfer-Encoding: chunked\r\n\r\n"
    status = {"code": 0}
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head.encode())
        if ctype.startswith("multipart"):
            first = b'--b\r\nContent-Disposition: form-data; name="files"; filename="x.txt"\r\n\r\n'
            sock.sendall(f"{len(first):x}\r\n".encode() + first + b"\r\n")
        reader = threading.Thread(
            target=lambda: status.update(code=read_status(sock, 600)), daemon=True
        )
        reader.start()
        sock.settimeout(30)
        sent = 0
        try:
            while sent < total:
                sock.sendall(frame)
                sent += len(piece)
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass
        reader.join(timeout=600)
    return int(status["code"])


def slow_connections(port: int, n: int, seconds: float) -> int:
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"POST /v1/query HTTP/1.1\r\nHost: x\r\n")
        socks.append(s)
    deadline = time.monotonic() + seconds
    open_ = set(range(n))
    while time.monotonic() < deadline:
        for i in list(open_):
            try:
                socks[i].sendall(b"X")
            except OSError:
                open_.discard(i)
        time.sleep(1.0)
    for i in list(open_):  # a closed peer shows as EOF on read
        socks[i].setblocking(False)
        try:
            if socks[i].recv(1) == b"":
                open_.discard(i)
        except BlockingIOError:
            pass
        except OSError:
            open_.discard(i)
    for s in socks:
        s.close()
    return len(open_)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--no-gate", action="store_true")
    parser.add_argument("--mib", type=int, default=256, help="multipart body size")
    parser.add_argument("--json-mib", type=int, default=128, help="JSON body size")
    parser.add_argument("--slow", type=int, default=200, help="slow-header connections")
    parser.add_argument("--slow-seconds", type=float, default=15.0)
    args = parser.parse_args()

    import uvicorn

    import perimeter.api.gate as gate
    from perimeter.api.app import create_app
    from perimeter.api.server import uvicorn_options
    from perimeter.composition import build_services
    from perimeter.settings import Settings

    if args.no_gate:

        async def passthrough(self: Any, scope: Any, receive: Any, send: Any) -> None:
            await self.app(scope, receive, send)

        gate.RequestGate.__call__ = passthrough  # type: ignore[method-assign]

    work = Path(tempfile.mkdtemp(prefix="perimeter-probe-"))
    spool = work / "spool"
    spool.mkdir()
    tempfile.tempdir = str(spool)
    settings = Settings(
        storage={"data_dir": work / "data"},
        auth={"mode": "api_key"},
        llm={"base_url": "http://127.0.0.1:9/v1"},
    )
    services = build_services(settings)
    services.ensure_ready()
    services.keys.create_tenant("acme")
    _rec, key = services.keys.create_key("acme", ["ingest", "query"], None)
    options = uvicorn_options(settings.api)
    if args.no_gate:
        options = {}
    port = 18000 + os.getpid() % 1000
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(services=services),
            host="127.0.0.1",
            port=port,
            log_level="error",
            **options,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)

    results: dict[str, Any] = {"gate": not args.no_gate}
    cases = [
        ("unauth_multipart", "/v1/documents", "multipart/form-data; boundary=b", None, args.mib),
        ("unauth_json", "/v1/query", "application/json", None, args.json_mib),
        ("auth_multipart_over_limit", "/v1/documents", "multipart/form-data; boundary=b", key,
         args.mib),
    ]  # fmt: skip
    for name, path, ctype, auth, mib in cases:
        with Sampler(spool) as sampler:
            started = time.perf_counter()
            status = send_chunked(port, path, ctype, auth, mib * MiB)
            elapsed = time.perf_counter() - started
        results[name] = {
            "body_mib": mib,
            "status": status,
            "temp_peak_mib": round(sampler.peak_tmp / MiB, 1),
            "rss_growth_mib": round((sampler.peak_rss - sampler.base_rss) / MiB, 1),
            "seconds": round(elapsed, 2),
        }
    results["slow_header_connections"] = {
        "opened": args.slow,
        "still_open_after_s": args.slow_seconds,
        "still_open": slow_connections(port, args.slow, args.slow_seconds),
    }
    server.should_exit = True
    thread.join(timeout=15)
    services.close()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
