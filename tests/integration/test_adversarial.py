"""The adversarial suite: one regression test (or more) per finding of the outside-style probe of
issue #19, against the real API with API keys on. It grows with each finding; the table is in
docs/security.md ("Adversarial findings").

The big-body tests are bounded in size (tens of MiB at most) and measure what the server spent
(bytes its app received, its temp-folder growth, traced memory), never wall time. They talk to
a real uvicorn server in a thread, since the test client buffers request bodies itself.
"""

from __future__ import annotations

import io
import json
import os
import socket
import tempfile
import threading
import time
import tracemalloc
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests import docfactory as df
from tests.conftest import SecureStack, free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024


def assert_error(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code, response.text
    assert "Traceback" not in response.text


def assert_nothing_stored(s: SecureStack) -> None:
    blobs = s.services.blobs.root
    stored = [p for p in blobs.rglob("*") if p.is_file() and p.parent.name != "tmp"]
    assert stored == []
    tmp = blobs / "tmp"
    assert not tmp.exists() or not list(tmp.iterdir())
    with s.services.metadata.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM documents")).scalar() == 0


# -- a real server in a thread, with a probe on what its app receives -------------------------


@dataclass
class Probe:
    """Bytes the application was handed through ``receive()`` (the gate sits inside)."""

    received: int = 0


@dataclass
class LiveServer:
    port: int
    probe: Probe

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        return sock


@contextmanager
def live_server(s: SecureStack) -> Iterator[LiveServer]:
    import uvicorn

    from perimeter.api.app import create_app
    from perimeter.api.server import uvicorn_options

    app = create_app(services=s.services)
    probe = Probe()

    async def probed(scope: Any, receive: Any, send: Any) -> None:
        async def counting() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                probe.received += len(message.get("body", b""))
            return message

        await app(scope, counting, send)

    port = free_port()
    config = uvicorn.Config(
        probed,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        **uvicorn_options(s.settings.api),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield LiveServer(port, probe)
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def read_response(
    sock: socket.socket, timeout_s: float = 10.0
) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of one HTTP/1.1 response (Content-Length bodies)."""
    sock.settimeout(timeout_s)
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        if not piece:
            break
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        piece = sock.recv(65536)
        if not piece:
            break
        body += piece
    return status, headers, body


def request_head(
    method: str, path: str, headers: dict[str, str], *, chunked: bool = False, length: int = 0
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def stream_chunked(sock: socket.socket, piece: bytes, total: int) -> int:
    """Send up to ``total`` bytes as HTTP chunks of ``piece`` until the server stops taking
    them (it answered and closed); returns the bytes sent."""
    frame = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    sent = 0
    sock.settimeout(5)
    try:
        while sent < total:
            sock.sendall(frame)
            sent += len(piece)
        sock.sendall(b"0\r\n\r\n")
    except OSError:  # reset or timed out: the server closed without reading the rest
        pass
    return sent


def folder_bytes(folder: Path) -> int:
    """Bytes in ``folder``, counting the files this process holds open there: spooled uploads
    are unnamed temp files (O_TMPFILE, or unlinked at once), invisible to a listing."""
    total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    prefix = str(folder)
    for fd in Path("/proc/self/fd").iterdir():
        try:
            if os.readlink(fd).startswith(prefix):
                total += os.stat(fd).st_size
        except OSError:
            continue  # closed meanwhile
    return total


@contextmanager
def sampled_temp_folder(tmp_path: Path) -> Iterator[dict[str, int]]:
    """Point the process's temp folder (where multipart parsing spools files) at a fresh one,
    and record its peak size while the block runs."""
    folder = tmp_path / "spool"
    folder.mkdir()
    previous = tempfile.tempdir
    tempfile.tempdir = str(folder)
    peak = {"bytes": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            with suppress(FileNotFoundError):
                peak["bytes"] = max(peak["bytes"], folder_bytes(folder))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield peak
    finally:
        stop.set()
        sampler.join()
        peak["after"] = folder_bytes(folder)
        tempfile.tempdir = previous


MULTIPART = "multipart/form-data; boundary=xyz"
JSON = "application/json"


def upload_head(auth: dict[str, str], **framing: Any) -> bytes:
    return request_head("POST", "/v1/documents", {**auth, "Content-Type": MULTIPART}, **framing)


def query_head(auth: dict[str, str], **framing: Any) -> bytes:
    return request_head("POST", "/v1/query", {**auth, "Content-Type": JSON}, **framing)


def multipart_prefix(filename: str = "big.txt") -> bytes:
    return (
        b'--xyz\r\nContent-Disposition: form-data; name="files"; filename="%s"\r\n'
        b"Content-Type: text/plain\r\n\r\n" % filename.encode()
    )


# -- finding 1: bodies read before authentication; limits only on a declared size ------------


def test_unauthenticated_bodies_are_refused_before_a_byte_is_read(
    secure_stack: SecureStack, tmp_path: Path
) -> None:
    s = secure_stack
    body_total = 24 * MiB
    piece = b"a" * (64 * 1024)
    with live_server(s) as srv, sampled_temp_folder(tmp_path) as spool:
        for path, ctype, first in [
            ("/v1/documents", MULTIPART, multipart_prefix()),
            ("/v1/query", "application/json", b'{"question": "'),
        ]:
            tracemalloc.start()
            before = srv.probe.received
            with srv.connect() as sock:
                sock.sendall(request_head("POST", path, {"Content-Type": ctype}, chunked=True))
                sock.sendall(f"{len(first):x}\r\n".encode() + first + b"\r\n")
                sender = threading.Thread(target=stream_chunked, args=(sock, piece, body_total))
                sender.start()
                status, headers, body = read_response(sock)
                sender.join(timeout=30)
            _, peak_mem = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            assert status == 401, body
            assert json.loads(body)["error"]["code"] == "unauthenticated"
            assert headers.get("connection") == "close"
            # The app never saw the body, and the server held no copy of it.
            assert srv.probe.received - before == 0
            assert peak_mem < 4 * MiB, peak_mem
    assert spool["bytes"] == 0, spool


def test_oversized_bodies_stop_at_the_limit_while_streaming(
    secure_stack: SecureStack, tmp_path: Path
) -> None:
    s = secure_stack
    s.settings.api.max_request_bytes = 2 * MiB  # + 1 MiB of multipart framing allowance
    ingest = s.key("acme", ("ingest", "query"))
    piece = b"a" * (64 * 1024)
    with live_server(s) as srv, sampled_temp_folder(tmp_path) as spool:
        # A chunked upload (no declared size) is cut at the limit, not at its 24 MiB.
        with srv.connect() as sock:
            sock.sendall(upload_head(ingest, chunked=True))
            first = multipart_prefix()
            sock.sendall(f"{len(first):x}\r\n".encode() + first + b"\r\n")
            sender = threading.Thread(target=stream_chunked, args=(sock, piece, 24 * MiB))
            sender.start()
            status, headers, body = read_response(sock, timeout_s=30)
            sender.join(timeout=30)
        assert status == 413, body
        assert json.loads(body)["error"]["code"] == "request_too_large"
        assert headers.get("connection") == "close"
        upload_read = srv.probe.received
        # The limit plus at most one read of the server's (uvicorn hands on up to 256 KiB).
        assert upload_read <= 3 * MiB + 512 * 1024, upload_read

        # A chunked JSON body is cut at api.max_json_bytes (1 MiB), in bounded memory.
        tracemalloc.start()
        before = srv.probe.received
        with srv.connect() as sock:
            sock.sendall(query_head(ingest, chunked=True))
            sender = threading.Thread(target=stream_chunked, args=(sock, piece, 24 * MiB))
            sender.start()
            status, _, body = read_response(sock, timeout_s=30)
            sender.join(timeout=30)
        _, peak_mem = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert status == 413, body
        assert srv.probe.received - before <= MiB + 512 * 1024
        assert peak_mem < 8 * MiB, peak_mem

        # A declared size past the limit is refused before any of it is read.
        before = srv.probe.received
        with srv.connect() as sock:
            sock.sendall(upload_head(ingest, length=500 * MiB))
            status, _, body = read_response(sock)
        assert status == 413, body
        assert srv.probe.received == before
    # Spooled parts of the cut upload stayed under the limit and were removed.
    assert spool["bytes"] <= 3 * MiB + 512 * 1024, spool
    assert spool["after"] == 0, spool
    assert_nothing_stored(s)


# -- finding 2: no header/body read timeouts, no cap on slow uploads --------------------------


def test_slow_headers_are_cut_off_by_the_header_timeout(secure_stack: SecureStack) -> None:
    s = secure_stack
    s.settings.api.header_timeout_s = 1.0
    with live_server(s) as srv:
        socks = [srv.connect() for _ in range(20)]
        try:
            for sock in socks:
                sock.sendall(b"POST /v1/query HTTP/1.1\r\nHost: x\r\n")
            closed = set()
            deadline = time.monotonic() + 6
            # A byte at a time: the connection must close anyway (the deadline is for the
            # whole head, not for each byte).
            while len(closed) < len(socks) and time.monotonic() < deadline:
                for i, sock in enumerate(socks):
                    if i in closed:
                        continue
                    try:
                        sock.sendall(b"X")
                        sock.settimeout(0.01)
                        if sock.recv(1024) == b"":
                            closed.add(i)
                    except TimeoutError:
                        pass
                    except OSError:
                        closed.add(i)
                time.sleep(0.1)
            assert len(closed) == len(socks), f"{len(socks) - len(closed)} still open"
        finally:
            for sock in socks:
                sock.close()
        # A prompt request is unaffected.
        with srv.connect() as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            status, _, _ = read_response(sock)
        assert status == 200


def test_stalled_and_trickled_bodies_get_408(secure_stack: SecureStack) -> None:
    s = secure_stack
    s.settings.api.body_idle_timeout_s = 0.5
    s.settings.api.body_timeout_s = 1.5
    query = s.key("acme", ("query",))
    with live_server(s) as srv:
        # Stalled: 10 of 1000 announced bytes, then nothing.
        with srv.connect() as sock:
            sock.sendall(query_head(query, length=1000))
            sock.sendall(b'{"question":')
            status, headers, body = read_response(sock)
        assert status == 408, body
        assert json.loads(body)["error"]["code"] == "request_timeout"
        assert headers.get("connection") == "close"
        # Trickled: a byte every 0.2 s never trips the idle timeout, but the total one.
        with srv.connect() as sock:
            sock.sendall(query_head(query, length=1000))
            sock.settimeout(0.2)
            status = 0
            for _ in range(50):
                try:
                    sock.sendall(b" ")
                    status, _, body = read_response(sock, timeout_s=0.2)
                    break
                except (TimeoutError, IndexError):
                    continue
            assert status == 408, body


def test_concurrent_uploads_are_capped(secure_stack: SecureStack) -> None:
    s = secure_stack
    s.settings.api.max_concurrent_uploads = 2
    s.settings.api.body_idle_timeout_s = 2.0
    ingest = s.key("acme", ("ingest",))
    head = upload_head(ingest, length=10 * MiB)
    with live_server(s) as srv:
        slow = [srv.connect() for _ in range(2)]
        try:
            for sock in slow:
                sock.sendall(head + multipart_prefix())
            time.sleep(0.3)
            with srv.connect() as sock:
                sock.sendall(head)
                status, headers, body = read_response(sock)
            assert status == 503, body
            assert json.loads(body)["error"]["code"] == "too_many_uploads"
            assert headers.get("retry-after") == "5"
            # The stalled ones time out (408) and give their slots back.
            for sock in slow:
                status, _, _ = read_response(sock)
                assert status == 408
        finally:
            for sock in slow:
                sock.close()
        small = multipart_prefix("ok.txt") + b"hello adversary\r\n--xyz--\r\n"
        with srv.connect() as sock:
            sock.sendall(upload_head(ingest, length=len(small)) + small)
            status, _, body = read_response(sock)
        assert status == 202, body


def test_server_options_carry_the_connection_limits(secure_stack: SecureStack) -> None:
    from perimeter.api.server import HeaderTimeoutH11Protocol, uvicorn_options

    api = secure_stack.settings.api
    api.header_timeout_s, api.keep_alive_timeout_s, api.max_connections = 3.0, 4.0, 77
    options = uvicorn_options(api)
    assert issubclass(options["http"], HeaderTimeoutH11Protocol)
    assert options["http"].header_timeout_s == 3.0
    assert options["timeout_keep_alive"] == 4.0
    assert options["limit_concurrency"] == 77


# -- finding 3: decompression bombs below the per-member threshold ----------------------------


def xlsx_bomb(sheets: int, sheet_bytes: int) -> bytes:
    row = b"<row><c t='inlineStr'><is><t>AAAAAAAAAAAAAAAA</t></is></c></row>"
    xml = b"<worksheet><sheetData>" + row * (sheet_bytes // len(row)) + b"</sheetData></worksheet>"
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("xl/workbook.xml", "<workbook/>")
        for i in range(1, sheets + 1):
            z.writestr(f"xl/worksheets/sheet{i}.xml", xml)
    return out.getvalue()


def pdf_with_streams(contents: list[bytes]) -> bytes:
    """A PDF with one page per content stream, each Flate-compressed."""
    n = len(contents)
    objs: list[bytes] = [b"<< /Type /Catalog /Pages 2 0 R >>"]
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(n)).encode()
    objs.append(b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, n))
    for i, content in enumerate(contents):
        comp = zlib.compress(content, 9)
        objs.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R >>"
            % (4 + 2 * i)
        )
        objs.append(
            b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(comp) + comp + b"\nendstream"
        )
    return df.pdf_from_objects(objs)


def test_bombs_are_measured_across_all_members_and_streams(secure_stack: SecureStack) -> None:
    s = secure_stack
    ingest = s.key("acme", ("ingest",))
    # The probe's workbook: 4 sheets of 9.5 MiB XML, each under the 10 MiB per-member check.
    bomb = xlsx_bomb(4, int(9.5 * MiB))
    assert len(bomb) < 400 * 1024
    r = s.client.post(
        "/v1/documents",
        files=[("files", ("report.xlsx", bomb, "application/octet-stream"))],
        headers=ingest,
    )
    assert_error(r, 422, "invalid_document")
    assert "in all" in r.json()["error"]["message"]
    # A PDF of two 6 MiB page streams (each under the per-stream check) likewise.
    pdf = pdf_with_streams([b"BT ET\n" * (MiB), b"BT ET\n" * (MiB)])
    r = s.client.post(
        "/v1/documents",
        files=[("files", ("pages.pdf", pdf, "application/pdf"))],
        headers=ingest,
    )
    assert_error(r, 422, "invalid_document")
    assert "in all" in r.json()["error"]["message"]
    assert_nothing_stored(s)


@pytest.mark.parametrize(
    "secure_stack", [{"chunking": {"max_chunks_per_document": 3}}], indirect=True
)
def test_chunk_count_is_bounded_per_document(secure_stack: SecureStack) -> None:
    s = secure_stack
    ingest = s.key("acme", ("ingest",))
    text = "\n\n".join(f"Paragraph {i}. " + "words " * 180 for i in range(12)).encode()
    r = s.client.post(
        "/v1/documents", files=[("files", ("long.txt", text, "text/plain"))], headers=ingest
    )
    assert r.status_code == 202, r.text
    doc_id = r.json()["documents"][0]["document_id"]
    final = s.wait_indexed([doc_id])[doc_id]
    assert final.status.value == "failed"
    assert "max_chunks_per_document" in (final.error or "")
    assert s.services.store.count_document("acme", doc_id) == 0


# -- findings 4 and 5: lone surrogates in metadata and group names -----------------------------


def raw_form(s: SecureStack, headers: dict[str, str], **fields: str) -> Any:
    """An upload whose form fields are sent verbatim (JSON escapes included)."""
    return s.client.post(
        "/v1/documents",
        files=[("files", ("note.txt", b"A note about surrogates.", "text/plain"))],
        data=fields,
        headers=headers,
    )


def test_invalid_unicode_is_a_400_at_every_door(secure_stack: SecureStack) -> None:
    s = secure_stack
    key = s.key("acme", ("ingest", "query", "admin"))
    assert_error(raw_form(s, key, metadata='{"a": "\\ud800"}'), 400, "invalid_text")
    assert_error(raw_form(s, key, metadata='{"\\udfff": "x"}'), 400, "invalid_text")
    assert_error(raw_form(s, key, metadata='{"a": ["ok", "\\u0000"]}'), 400, "invalid_text")
    assert_error(raw_form(s, key, groups='["\\ud800"]'), 400, "malformed_groups")
    json_headers = {**key, "Content-Type": "application/json"}
    for body in [
        b'{"question": "\\ud800 what?", "retrieval_only": true}',
        b'{"question": "what\\u0000?", "retrieval_only": true}',
        b'{"question": "\xed\xa0\x80 encoded surrogate", "retrieval_only": true}',
        b'{"question": "\xff\xfe not UTF-8", "retrieval_only": true}',
    ]:
        r = s.client.post("/v1/query", content=body, headers=json_headers)
        assert_error(r, 400, "invalid_text")
    r = s.client.post(
        "/v1/chat/completions",
        content=b'{"model": "perimeter", "messages": [{"role": "user", "content": "\\udc00"}]}',
        headers=json_headers,
    )
    assert_error(r, 400, "invalid_text")
    r = s.client.post(
        "/v1/collections", content=b'{"name": "c1", "description": "\\ud800"}', headers=json_headers
    )
    assert_error(r, 400, "invalid_text")
    # A valid pair and an escaped backslash are text, not lone surrogates.
    r = raw_form(s, key, metadata='{"emoji": "\\ud83d\\ude00", "path": "C:\\\\ud800"}')
    assert r.status_code == 202, r.text
    doc_id = r.json()["documents"][0]["document_id"]
    got = s.client.get(f"/v1/documents/{doc_id}", headers=key).json()
    assert got["metadata"] == {"emoji": "\U0001f600", "path": "C:\\ud800"}


def test_a_stored_bad_value_never_breaks_a_listing(secure_stack: SecureStack) -> None:
    s = secure_stack
    key = s.key("acme", ("ingest", "query", "admin"))
    ok = raw_form(s, key, metadata='{"a": "fine"}')
    assert ok.status_code == 202, ok.text
    doc_id = ok.json()["documents"][0]["document_id"]
    # Values written before the door checked them (or by a bug elsewhere). JSON columns keep
    # them as \\u escapes; text columns cannot hold them at all (the driver refuses to encode).
    from perimeter.backends.sql_metadata import documents

    with s.services.metadata.engine.begin() as conn:
        conn.execute(
            documents.update()
            .where(documents.c.id == doc_id)
            .values(metadata={"a": "\ud800", "\udc00": "k"})
        )
    s.services.audit.record(
        tenant_id="acme",
        actor="key:legacy",
        auth_method="api_key",
        action="upload",
        details={"groups": ["\ud800"], "files": [{"filename": "x\udfff"}]},
    )
    listing = s.client.get("/v1/documents", headers=key)
    assert listing.status_code == 200, listing.text
    (doc,) = listing.json()["documents"]
    assert doc["metadata"] == {"a": "\ufffd", "\ufffd": "k"}
    assert s.client.get(f"/v1/documents/{doc_id}", headers=key).status_code == 200
    audit = s.client.get("/v1/admin/audit", headers=key)
    assert audit.status_code == 200, audit.text
    assert audit.json()["entries"][0]["details"]["groups"] == ["\ufffd"]


# -- finding 6: /metrics readable by anyone ---------------------------------------------------


def test_metrics_need_an_admin_credential_or_the_scrape_token(secure_stack: SecureStack) -> None:
    from pydantic import SecretStr

    s = secure_stack
    assert_error(s.client.get("/metrics"), 401, "unauthenticated")
    assert_error(s.client.get("/metrics", headers=s.key("acme", ("query",))), 403,
                 "insufficient_scope")  # fmt: skip
    admin = s.client.get("/metrics", headers=s.key("acme", ("admin",)))
    assert admin.status_code == 200 and "perimeter_" in admin.text
    s.settings.api.metrics_token = SecretStr("scrape-secret-0123456789")
    scraper = {"Authorization": "Bearer scrape-secret-0123456789"}
    assert s.client.get("/metrics", headers=scraper).status_code == 200
    assert_error(s.client.get("/metrics", headers={"Authorization": "Bearer wrong"}), 401,
                 "unauthenticated")  # fmt: skip
    s.settings.api.metrics_access = "public"
    assert s.client.get("/metrics").status_code == 200
    # The public probes stay public.
    s.settings.api.metrics_access = "admin"
    assert s.client.get("/healthz").status_code == 200
    assert s.client.get("/metrics").status_code == 401


# -- findings 7 and 8: collection counts and what admin may do across groups ------------------


def upload_one(s: SecureStack, headers: dict[str, str], name: str, groups: list[str]) -> str:
    r = s.client.post(
        "/v1/documents",
        files=[("files", (name, f"Content of {name}, unique {name}.".encode(), "text/plain"))],
        data={"groups": json.dumps(groups)},
        headers=headers,
    )
    assert r.status_code == 202, r.text
    return str(r.json()["documents"][0]["document_id"])


def test_collection_counts_respect_the_callers_groups(secure_stack: SecureStack) -> None:
    s = secure_stack
    owner = s.key("acme", ("ingest", "query"))  # no groups: reads (and may restrict) all
    upload_one(s, owner, "public.txt", [])
    upload_one(s, owner, "hr-1.txt", ["hr"])
    upload_one(s, owner, "hr-2.txt", ["hr"])
    eng = s.key("acme", ("query",), groups=["eng"])
    hr = s.key("acme", ("query",), groups=["hr"])

    def count(headers: dict[str, str]) -> tuple[int, int]:
        listed = s.client.get("/v1/collections", headers=headers).json()["collections"]
        one = s.client.get("/v1/collections/default", headers=headers).json()
        (default,) = [c for c in listed if c["name"] == "default"]
        return default["document_count"], one["document_count"]

    assert count(eng) == (1, 1)
    assert count(hr) == (3, 3)
    assert count(owner) == (3, 3)


def test_admin_scope_is_tenant_wide_across_groups_as_documented(
    secure_stack: SecureStack,
) -> None:
    s = secure_stack
    owner = s.key("acme", ("ingest", "query", "admin"))
    created = s.client.post("/v1/collections", json={"name": "payroll"}, headers=owner)
    assert created.status_code == 201, created.text
    r = s.client.post(
        "/v1/documents",
        files=[("files", ("salaries.txt", b"Salaries of 2026.", "text/plain"))],
        data={"groups": '["hr"]', "collection": "payroll"},
        headers=owner,
    )
    assert r.status_code == 202, r.text
    # An admin outside the group: reads the audit entry (restricted filename included) ...
    admin_eng = s.key("acme", ("admin",), groups=["eng"])
    entries = s.client.get("/v1/admin/audit", headers=admin_eng).json()["entries"]
    assert any(
        f["filename"] == "salaries.txt" for e in entries for f in e["details"].get("files", [])
    )
    # ... but its admin scope is no read access to the documents themselves ...
    reader_eng = s.key("acme", ("query",), groups=["eng"])
    payroll = s.client.get("/v1/collections/payroll", headers=reader_eng).json()
    assert payroll["document_count"] == 0
    # ... and may delete the collection with everything in it, hidden documents included.
    assert s.client.delete("/v1/collections/payroll", headers=admin_eng).status_code == 204
    assert s.services.metadata.list_documents("acme", limit=10) == []
    # Other tenants are out of reach whatever the scope.
    other = s.key("globex", ("admin",))
    theirs = s.client.get("/v1/admin/audit", headers=other).json()["entries"]
    assert all(e["tenant_id"] == "globex" for e in theirs)
    # The rule is written down where operators read it.
    security = (ROOT / "docs" / "security.md").read_text(encoding="utf-8")
    assert "admin scope is tenant-wide" in security
    assert "admin scope is tenant-wide" in (ROOT / "README.md").read_text(encoding="utf-8")
