"""Hostile and malformed uploads through the real API and worker: every one is a clear 4xx or a
sanitised success, the worker survives, and nothing is ever half-ingested (no orphan file, no
temp file, no searchable chunk of a failed document)."""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import pytest

from tests import docfactory as df
from tests.conftest import Stack

pytestmark = pytest.mark.integration


def post_files(stack: Stack, files: list[tuple[str, bytes]], **data: str) -> Any:
    parts = [("files", (name, content, "application/octet-stream")) for name, content in files]
    return stack.client.post("/v1/documents", files=parts, data=data or None)


def assert_clean_4xx(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] == code, body
    assert "Traceback" not in response.text


def assert_nothing_half_ingested(stack: Stack) -> None:
    """Every row is indexed with all its chunks or failed with none; every stored file belongs
    to a row; no temp file is left behind."""
    svc = stack.services
    docs = svc.metadata.list_documents("default", limit=1000)
    for d in docs:
        chunks = svc.store.count_document("default", d.id)
        if d.status.value == "indexed":
            assert chunks == d.chunk_count > 0, d
        elif d.status.value == "failed":
            assert chunks == 0 and d.error, d
    hashes = {d.content_hash for d in docs}
    stored = {p.name for p in svc.blobs.root.rglob("*") if p.is_file() and p.parent.name != "tmp"}
    assert stored == hashes
    tmp = svc.blobs.root / "tmp"
    assert not tmp.exists() or not list(tmp.iterdir())


def pdf_with_stream(content: bytes) -> bytes:
    """A one-page PDF whose page content is ``content``, Flate-compressed."""
    comp = zlib.compress(content, 9)
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(comp) + comp + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    return df.pdf_from_objects(objs)


def test_size_and_count_limits_are_413_and_store_nothing(stack: Stack) -> None:
    limits = stack.settings.api  # the routes read these per request
    limits.max_file_bytes = 64 * 1024
    limits.max_request_bytes = 100 * 1024
    limits.max_files_per_request = 3

    big = b"# Big\n\n" + b"word " * 20_000  # ~100 KB
    assert_clean_4xx(post_files(stack, [("big.md", big)]), 413, "file_too_large")
    medium = b"# M\n\n" + b"text " * 12_000  # ~60 KB each: fine alone, too much together
    r = post_files(stack, [("a.md", medium), ("b.md", medium + b"x")])
    assert_clean_4xx(r, 413, "request_too_large")
    many = [(f"f{i}.md", f"# F{i}\n\nfile {i}".encode()) for i in range(4)]
    assert_clean_4xx(post_files(stack, many), 413, "too_many_files")
    # A declared Content-Length past the request limit is refused before the body is read.
    r = stack.client.post(
        "/v1/documents",
        content=b"x",
        headers={"Content-Type": "multipart/form-data; boundary=b", "Content-Length": "99999999"},
    )
    assert_clean_4xx(r, 413, "request_too_large")
    assert stack.client.get("/v1/documents").json()["documents"] == []
    assert_nothing_half_ingested(stack)


def test_type_is_sniffed_from_content_not_name_or_declared_type(
    stack: Stack, tmp_path: Path
) -> None:
    elf = b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 4
    assert_clean_4xx(post_files(stack, [("report.pdf", elf)]), 415, "unsupported_file_type")
    gif = b"GIF89a" + b"\x00" * 64
    assert_clean_4xx(post_files(stack, [("memo.docx", gif)]), 415, "unsupported_file_type")
    assert_clean_4xx(post_files(stack, [("notes.md", b"PK\x05\x06" + b"\0" * 18)]), 415,
                     "unsupported_file_type")  # fmt: skip

    pdf = df.make_pdf(tmp_path / "real.pdf", [["Heading", "Sniffed by content, not by name."]])
    r = stack.client.post(
        "/v1/documents",
        files=[("files", ("innocent.txt", pdf.read_bytes(), "text/plain"))],
    )
    assert r.status_code == 202, r.text
    doc_id = r.json()["documents"][0]["document_id"]
    html = b"<!doctype html><html><body><h1>Menu</h1><p>Tea and cake.</p></body></html>"
    r2 = stack.client.post("/v1/documents", files=[("files", ("page.md", html, "application/pdf"))])
    assert r2.status_code == 202, r2.text
    html_id = r2.json()["documents"][0]["document_id"]
    final = stack.wait_indexed([doc_id, html_id])
    assert final[doc_id]["content_type"] == "application/pdf"
    assert final[doc_id]["status"] == "indexed"
    assert final[html_id]["content_type"] == "text/html"
    assert_nothing_half_ingested(stack)


@pytest.mark.parametrize(
    ("name", "make", "status", "code"),
    [
        ("corrupt.pdf", lambda p: df.make_corrupt_pdf(p).read_bytes(), 422, "invalid_document"),
        ("locked.pdf", lambda p: df.make_encrypted_pdf(p).read_bytes(), 422, "invalid_document"),
        ("empty.pdf", lambda p: df.make_zero_page_pdf(p).read_bytes(), 422, "invalid_document"),
        (
            "cut.pdf",
            lambda p: df.make_truncated_pdf(
                p, df.make_pdf(p.with_suffix(".src.pdf"), [["A", "b " * 500]] * 3)
            ).read_bytes(),
            422,
            "invalid_document",
        ),
        # 100 KB on the wire, 100 MB of page content once inflated.
        (
            "bomb.pdf",
            lambda p: pdf_with_stream(b"BT (x) Tj ET\n" + b" " * (100 * 1024 * 1024)),
            422,
            "invalid_document",
        ),
        ("bomb.docx", lambda p: df.make_zip_bomb_docx(p).read_bytes(), 422, "invalid_document"),
        ("broken.docx", lambda p: df.make_corrupt_docx(p).read_bytes(), 422, "invalid_document"),
        (
            "hollow.docx",
            lambda p: df.make_docx_missing_document_part(p).read_bytes(),
            422,
            "invalid_document",
        ),
        ("archive.zip", lambda p: df.make_plain_zip(p).read_bytes(), 415, "unsupported_file_type"),
        (
            "garbage.txt",
            lambda p: df.make_binary_garbage(p).read_bytes(),
            415,
            "unsupported_file_type",
        ),
        ("nul.txt", lambda p: b"text with a NUL \x00 inside" * 10, 415, "unsupported_file_type"),
        ("utf16.txt", lambda p: "hello".encode("utf-16"), 422, "invalid_document"),
        ("blank.md", lambda p: b" \n\t\n  ", 422, "invalid_document"),
        # Thousands of unclosed "[" in one paragraph stall Python-Markdown for minutes.
        ("brackets.md", lambda p: b"[a " * 20_000, 422, "invalid_document"),
    ],
    ids=lambda v: v if isinstance(v, str) and "." in v else None,
)
def test_hostile_files_are_refused_with_a_clear_4xx(
    stack: Stack, tmp_path: Path, name: str, make: Any, status: int, code: str
) -> None:
    content = make(tmp_path / name)
    good = b"# Fine\n\nA perfectly fine file."
    r = post_files(stack, [("good.md", good), (name, content)])
    assert_clean_4xx(r, status, code)
    assert name in r.json()["error"]["message"]
    assert stack.client.get("/v1/documents").json()["documents"] == []
    assert_nothing_half_ingested(stack)


def test_parser_bombs_that_pass_validation_fail_cleanly_and_the_worker_survives(
    stack: Stack,
) -> None:
    deep_html = (
        b"<html><body>"
        + b"<div>" * 100_000
        + b"deep text"
        + b"</div>" * 100_000
        + b"</body></html>"
    )
    deep_md = b"".join(b"  " * i + b"- item\n" for i in range(300)) + b"\nTail words here.\n"
    nested_quotes = b">" * 5000 + b" quoted\n\nTail paragraph words.\n"
    wide_csv = b",".join(b"c%d" % i for i in range(2_000)) + b"\n" + b",".join([b"1"] * 2_000)
    r = post_files(
        stack,
        [
            ("deep.html", deep_html),
            ("deep.md", deep_md),
            ("quotes.md", nested_quotes),
            ("wide.csv", wide_csv),
        ],
    )
    assert r.status_code == 202, r.text
    ids = [d["document_id"] for d in r.json()["documents"]]
    final = stack.wait_indexed(ids, timeout_s=240)
    for doc in final.values():
        assert doc["status"] in ("indexed", "failed"), doc
        if doc["status"] == "failed":
            assert doc["error"] and "Traceback" not in doc["error"]
    # The worker is alive and well afterwards.
    ok = post_files(stack, [("after.md", b"# After\n\nThe worker still works after bombs.")])
    after = ok.json()["documents"][0]["document_id"]
    assert stack.wait_indexed([after])[after]["status"] == "indexed"
    assert_nothing_half_ingested(stack)


def _raw_multipart(filename: bytes, content: bytes) -> tuple[bytes, str]:
    boundary = "hostileboundary1234"
    body = (
        f"--{boundary}\r\n".encode()
        + b'Content-Disposition: form-data; name="files"; filename="'
        + filename
        + b'"\r\nContent-Type: text/markdown\r\n\r\n'
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def test_hostile_names_are_sanitised_and_unicode_content_survives(
    stack: Stack, tmp_path: Path
) -> None:
    cases = {
        "../../etc/passwd.md": "passwd.md",
        "..\\..\\windows\\system32\\evil.md": "evil.md",
        "/abs/path/report.md": "report.md",
        "invoice\u202egpj.md": "invoicegpj.md",  # bidi override hiding the real extension
        "zero\u200bwidth\u200d.md": "zerowidth.md",
        "CON.md": "_CON.md",
        "...hidden.md": "hidden.md",
        "a" * 400 + ".md": None,  # truncated to 255 bytes, extension kept
    }
    uploaded: dict[str, str] = {}
    for i, (raw, _expected) in enumerate(cases.items()):
        content = (
            f"# Doc {i}\n\nUnicode: שלום עולם مرحبا بالعالم \u200b\u200f e\u0301 🦦 {i}".encode()
        )
        r = stack.client.post("/v1/documents", files=[("files", (raw, content, "text/markdown"))])
        assert r.status_code == 202, (raw, r.text)
        uploaded[raw] = r.json()["documents"][0]["document_id"]
    # A NUL byte inside the multipart filename itself (clients percent-encode; attackers do not).
    body, ctype = _raw_multipart(b"evil\x00.exe.md", b"# Nul\n\nA name with a NUL byte.")
    r = stack.client.post("/v1/documents", content=body, headers={"Content-Type": ctype})
    assert r.status_code == 202, r.text
    nul_doc = r.json()["documents"][0]
    assert "\x00" not in nul_doc["filename"] and nul_doc["filename"].endswith(".md")

    final = stack.wait_indexed([*uploaded.values(), nul_doc["document_id"]])
    for raw, expected in cases.items():
        doc = final[uploaded[raw]]
        assert doc["status"] == "indexed", doc
        name = doc["filename"]
        assert "/" not in name and "\\" not in name and not name.startswith(".")
        assert not any(ord(c) < 32 or c in "\u202e\u200b\u200d" for c in name)
        if expected is not None:
            assert name == expected, (raw, name)
        else:
            assert len(name.encode()) <= 255 and name.endswith(".md")
    # Nothing was written outside the data folder, and no stored file took a client's name.
    assert not (tmp_path / "etc").exists()
    names = {p.name for p in stack.services.blobs.root.rglob("*")}
    assert not names & {"passwd.md", "evil.md", "report.md"}
    # The unicode text is searchable as written.
    q = {"question": "שלום עולם", "retrieval_only": True, "min_score": -1.0}
    hits = stack.client.post("/v1/query", json=q).json()["sources"]
    assert hits and "שלום" in hits[0]["snippet"]
    assert_nothing_half_ingested(stack)


def test_hostile_form_fields_are_4xx(stack: Stack) -> None:
    md = [("m.md", b"# M\n\nSome text.")]
    assert_clean_4xx(post_files(stack, md, metadata="x" * 20_000), 413, "metadata_too_large")
    assert_clean_4xx(post_files(stack, md, metadata='{"a": {"b": 1}}'), 400, "malformed_metadata")
    assert_clean_4xx(post_files(stack, md, metadata="[" * 5000), 400, "malformed_metadata")
    assert_clean_4xx(post_files(stack, md, groups="[" * 5000), 400, "malformed_groups")
    assert_clean_4xx(post_files(stack, md, groups=json.dumps(["g"] * 10_000)), 413,
                     "groups_too_large")  # fmt: skip
    many = json.dumps([f"g{i}" for i in range(100)])
    assert_clean_4xx(post_files(stack, md, groups=many), 400, "malformed_groups")
    r = stack.client.post(
        "/v1/documents", content=b"--x\r\ngarbage", headers={"Content-Type": "multipart/form-data"}
    )
    assert 400 <= r.status_code < 500, r.text
    r = stack.client.post("/v1/documents", content=b"{}", headers={"Content-Type": "text/plain"})
    assert 400 <= r.status_code < 500, r.text
    # Deeply nested JSON bodies hit the parser's recursion limit: a 400, not a 500.
    for raw in (b"[" * 100_000, b'{"question": ' + b"[" * 100_000):
        r = stack.client.post(
            "/v1/query", content=raw, headers={"Content-Type": "application/json"}
        )
        assert 400 <= r.status_code < 500, r.text
    assert stack.client.get("/v1/documents").json()["documents"] == []
    assert_nothing_half_ingested(stack)
