"""Upload → async ingest → list/get/delete through the real API, a real Celery worker on Redis,
real unstructured parsing of generated files, the real embedder and local Qdrant."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests import docfactory as df
from tests.conftest import Stack, upload_files

pytestmark = pytest.mark.integration


def upload(stack: Stack, *paths: Path, metadata: str | None = None) -> Any:
    extra = {"metadata": metadata} if metadata is not None else {}
    return upload_files(stack.client, *paths, **extra)


def leftovers(stack: Stack) -> list[Path]:
    tmp = stack.services.blobs.root / "tmp"
    return list(tmp.iterdir()) if tmp.exists() else []


def test_upload_many_formats_index_with_pages_sections_and_metadata(
    stack: Stack, tmp_path: Path
) -> None:
    pdf = df.make_pdf(
        tmp_path / "handbook.pdf",
        [
            ["Onboarding", "New staff receive a badge on their first day at the front desk."],
            ["Security", "Badges must be returned to the security office when staff leave."],
        ],
    )
    docx = df.make_docx(
        tmp_path / "policy.docx",
        [("Travel policy", ["Economy class is required for flights shorter than six hours."])],
    )
    html = df.make_html(
        tmp_path / "faq.html",
        "Cafeteria FAQ",
        [("Opening hours", ["The cafeteria opens at 7:30 and closes at 15:00 on weekdays."])],
    )
    md = df.make_md(
        tmp_path / "notes.md",
        "Release notes",
        [("Version 2.4", ["Version 2.4 adds hybrid search and streaming answers."])],
    )
    response = upload(stack, pdf, docx, html, md, metadata='{"team": "ops", "year": 2026}')
    assert response.status_code == 202, response.text
    uploaded = response.json()["documents"]
    assert [u["filename"] for u in uploaded] == [
        "handbook.pdf",
        "policy.docx",
        "faq.html",
        "notes.md",
    ]
    assert all(u["status"] == "queued" and not u["duplicate"] for u in uploaded)

    final = stack.wait_indexed([u["document_id"] for u in uploaded])
    for doc in final.values():
        assert doc["status"] == "indexed", doc
        assert doc["chunk_count"] >= 1
        assert doc["metadata"] == {"team": "ops", "year": 2026}
    pdf_doc = final[uploaded[0]["document_id"]]
    assert pdf_doc["pages"] == 2

    # Chunks in Qdrant match the row, and carry page + section + filename for citations.
    store = stack.services.store
    for doc_id, doc in final.items():
        assert store.count_document("default", doc_id) == doc["chunk_count"]
    hits = stack.client.post(
        "/v1/query",
        json={"question": "Where are badges returned when staff leave?", "retrieval_only": True},
    ).json()["sources"]
    assert hits[0]["document_id"] == uploaded[0]["document_id"]
    assert hits[0]["page"] == 2
    assert "security office" in hits[0]["snippet"]

    # Job endpoint tracks the same work.
    job = stack.client.get(f"/v1/jobs/{uploaded[1]['job_id']}").json()
    assert job["status"] == "succeeded" and job["progress"] == 1.0

    listing = stack.client.get("/v1/documents", params={"status": "indexed"}).json()["documents"]
    assert {d["id"] for d in listing} == set(final)


def test_same_content_twice_is_one_document_and_reingest_is_idempotent(
    stack: Stack, tmp_path: Path
) -> None:
    md = df.make_md(tmp_path / "a.md", "Alpha", [("One", ["Alpha content about glaciers."])])
    copy = tmp_path / "copy-of-a.md"
    copy.write_bytes(md.read_bytes())
    first = upload(stack, md).json()["documents"][0]
    stack.wait_indexed([first["document_id"]])
    second = upload(stack, copy).json()["documents"][0]
    assert second["document_id"] == first["document_id"]
    assert second["duplicate"] is True
    assert len(stack.client.get("/v1/documents").json()["documents"]) == 1

    # Running the task again (a redelivery) overwrites the same points: no duplicates.
    doc_id = first["document_id"]
    before = stack.services.store.count_document("default", doc_id)
    stack.services.metadata.new_job("default", doc_id)
    outcome = stack.services.ingestion.process(doc_id)
    assert outcome.status == "indexed"
    assert stack.services.store.count_document("default", doc_id) == before


def test_delete_removes_chunks_file_and_row(stack: Stack, tmp_path: Path) -> None:
    md = df.make_md(tmp_path / "gone.md", "Gone", [("Only", ["Text about volcanoes in Iceland."])])
    doc = upload(stack, md).json()["documents"][0]
    stack.wait_indexed([doc["document_id"]])
    record = stack.services.metadata.get_document("default", doc["document_id"])
    assert record is not None
    blob = stack.services.blobs.path_for(record.content_hash)
    assert blob.exists()

    assert stack.client.delete(f"/v1/documents/{doc['document_id']}").status_code == 204
    assert stack.services.store.count_document("default", doc["document_id"]) == 0
    assert not blob.exists()
    missing = stack.client.get(f"/v1/documents/{doc['document_id']}")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "document_not_found"
    assert stack.client.delete(f"/v1/documents/{doc['document_id']}").status_code == 404


@pytest.mark.parametrize(
    ("maker", "status", "code"),
    [
        (
            lambda p: ((p / "empty.txt").write_bytes(b"") and None) or p / "empty.txt",
            422,
            "invalid_document",
        ),
        (lambda p: df.make_binary_garbage(p / "garbage.bin"), 415, "unsupported_file_type"),
        (lambda p: df.make_corrupt_pdf(p / "broken.pdf"), 422, "invalid_document"),
        (lambda p: df.make_encrypted_pdf(p / "locked.pdf"), 422, "invalid_document"),
        (lambda p: df.make_zip_bomb_docx(p / "bomb.docx"), 422, "invalid_document"),
    ],
    ids=["empty", "garbage", "corrupt-pdf", "encrypted-pdf", "zip-bomb"],
)
def test_bad_files_get_clear_4xx_and_leave_nothing(
    stack: Stack, tmp_path: Path, maker: Any, status: int, code: str
) -> None:
    good = df.make_md(tmp_path / "good.md", "Good", [("Fine", ["A perfectly fine file."])])
    bad = maker(tmp_path)
    # A bad file in a batch rejects the batch: the good file is not stored either.
    response = upload(stack, good, bad)
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert body["code"] == code
    assert bad.name in body["message"]
    assert "Traceback" not in response.text
    assert stack.client.get("/v1/documents").json()["documents"] == []
    assert leftovers(stack) == []
    blobs = [p for p in stack.services.blobs.root.rglob("*") if p.is_file()]
    assert blobs == []


def test_request_level_errors_are_json_4xx(stack: Stack, tmp_path: Path) -> None:
    md = df.make_md(tmp_path / "m.md", "M", [("S", ["Some text."])])
    bad_meta = upload(stack, md, metadata="{not json")
    assert bad_meta.status_code == 400
    assert bad_meta.json()["error"]["code"] == "malformed_metadata"
    not_object = upload(stack, md, metadata="[1, 2]")
    assert not_object.status_code == 400

    no_files = stack.client.post("/v1/documents", data={"metadata": "{}"})
    assert no_files.status_code == 422
    assert no_files.json()["error"]["code"] == "invalid_request"

    malformed = stack.client.post(
        "/v1/query", content=b'{"question": ', headers={"Content-Type": "application/json"}
    )
    assert malformed.status_code == 400
    assert malformed.json()["error"]["code"] == "malformed_json"

    blank = stack.client.post("/v1/query", json={"question": "   "})
    assert blank.status_code == 422
    unknown_field = stack.client.post("/v1/query", json={"question": "x", "tenant_id": "other"})
    assert unknown_field.status_code == 422

    assert stack.client.get("/v1/jobs/nope").status_code == 404
    assert stack.client.get("/v1/documents/nope").json()["error"]["code"] == "document_not_found"
    assert leftovers(stack) == []


def test_file_that_parses_to_nothing_ends_failed_with_reason(stack: Stack, tmp_path: Path) -> None:
    pdf = df.make_image_only_pdf(tmp_path / "scan.pdf")
    doc = upload(stack, pdf).json()["documents"][0]
    final = stack.wait_indexed([doc["document_id"]])[doc["document_id"]]
    assert final["status"] == "failed"
    assert final["error"]
    assert stack.services.store.count_document("default", doc["document_id"]) == 0
    job = stack.client.get(f"/v1/jobs/{doc['job_id']}").json()
    assert job["status"] == "failed" and job["error"] == final["error"]


def test_responses_carry_a_request_id(stack: Stack) -> None:
    mine = stack.client.get("/v1/documents/nope", headers={"X-Request-ID": "trace-7"})
    assert mine.headers["x-request-id"] == "trace-7"
    fresh = stack.client.get("/healthz")
    assert len(fresh.headers["x-request-id"]) == 16
