"""Zero-downtime re-index (perimeter.ingest.reindex) on the embedded default, with a real Celery
worker ingesting during the copy and the switch, and questions asked the whole time.

The "different model" is a tiny randomly initialised BGE-M3-like model (tests/tiny_models.py):
32-d dense vectors and a learned sparse head instead of MiniLM's 384-d + BM25. A model of
another size is the hard case: a question embedded by one model and searched in the other's
collection would fail outright, so zero failed questions shows that model and collection
switch together. (Its vectors are random: this test is about availability and completeness;
retrieval quality of a re-index is the same code path as ingestion.)

CI runs 120 documents; the 1,400-document run is bench/reindex_live.py (BENCHMARKS.md).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from perimeter.backends.reindex_state import Generation
from tests.conftest import Stack, running_stack, upload_files
from tests.docfactory import make_txt
from tests.tiny_models import HIDDEN, build_bge_m3_like_folder

pytestmark = pytest.mark.integration

TOPICS = ["harbour", "glacier", "orchard", "foundry", "lighthouse", "vineyard", "quarry", "mill"]


def _write_docs(folder: Path, start: int, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + count):
        topic = TOPICS[i % len(TOPICS)]
        paths.append(
            make_txt(
                folder / f"doc-{i:05d}.txt",
                [
                    f"Report {i} on the {topic}. The {topic} inspection number {i} found the "
                    f"records in order and the staff of the {topic} trained.",
                    f"Appendix {i}: maintenance of the {topic} is scheduled for week {i % 52}.",
                ],
            )
        )
    return paths


def _upload(stack: Stack, paths: list[Path]) -> list[str]:
    ids: list[str] = []
    for start in range(0, len(paths), 20):
        r = upload_files(stack.client, *paths[start : start + 20])
        assert r.status_code == 202, r.text
        ids += [d["document_id"] for d in r.json()["documents"]]
    return ids


class Questions:
    """Asks retrieval-only questions in a loop and records every failure."""

    def __init__(self, stack: Stack) -> None:
        self._client = stack.client
        self.asked = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            topic = TOPICS[i % len(TOPICS)]
            i += 1
            try:
                r = self._client.post(
                    "/v1/query",
                    json={"question": f"inspection of the {topic}", "retrieval_only": True},
                )
                if r.status_code != 200:
                    self.failures.append(f"{r.status_code}: {r.text[:300]}")
                elif not r.json()["sources"]:
                    self.failures.append("no sources")
            except Exception as exc:  # a failed question, whatever the cause
                self.failures.append(repr(exc))
            self.asked += 1

    def __enter__(self) -> Questions:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(60)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bge_m3_like_folder(tmp_path_factory.mktemp("tiny-m3") / "model")


@pytest.fixture
def stack(
    tmp_path: Path, shared_embedder: Any, request: pytest.FixtureRequest, tiny_model: Path
) -> Iterator[Stack]:
    overrides = {
        "kb": {"embedding_profiles": {"tiny": {"kind": "bge-m3", "model": str(tiny_model)}}},
        # Quick to notice the copy is done; no pause for live uploads, so the copy and the
        # live ingestion really overlap in this short test.
        "reindex": {"batch_documents": 8, "yield_to_ingest_s": 0.0},
    }
    with running_stack(Stack, tmp_path, shared_embedder, request, overrides) as s:
        yield s


def _wait_state(stack: Stack, job_id: str, state: str, timeout_s: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body: dict[str, Any] = stack.client.get(f"/v1/admin/reindex/{job_id}").json()
        if body["state"] == state:
            return body
        assert body["error"] is None, body
        time.sleep(0.2)
    raise TimeoutError(f"re-index {job_id} not {state} in {timeout_s}s: {body}")


def _indexed_ids(stack: Stack) -> set[str]:
    docs = stack.services.metadata.list_documents("default", limit=10_000)
    return {d.id for d in docs if d.status.value == "indexed"}


def _collection_ids(stack: Stack, collection: str) -> set[str]:
    # The same Generation the job holds: the registry hands back the store that serves it (an
    # Edge shard folder is opened by one store object per process).
    gen = (
        Generation(collection, "tiny") if "__g" in collection else Generation(collection, "default")
    )
    store: Any = stack.services.profiles.generation(gen).store
    return {d for _t, d in store.document_ids()}


def test_model_upgrade_while_questions_and_uploads_continue(stack: Stack, tmp_path: Path) -> None:
    base = stack.services.store.collection
    first = _upload(stack, _write_docs(tmp_path / "a", 0, 120))
    stack.wait_indexed(first, timeout_s=300)

    with Questions(stack) as questions:
        r = stack.client.post("/v1/admin/reindex", json={"embedding_profile": "tiny"})
        assert r.status_code == 202, r.text
        job = r.json()
        assert job["state"] == "running" and job["serving"] == base
        target = job["target"]["collection"]
        # A second re-index of the same profile is refused while this one is active.
        again = stack.client.post("/v1/admin/reindex", json={"embedding_profile": "tiny"})
        assert again.status_code == 409, again.text

        # During the copy: new uploads, and deletes of documents the copy may already have
        # written.
        during = _upload(stack, _write_docs(tmp_path / "b", 1000, 20))
        deleted = first[:10]
        for doc_id in deleted:
            assert stack.client.delete(f"/v1/documents/{doc_id}").status_code == 204
        stack.wait_indexed(during, timeout_s=300)
        _wait_state(stack, job["id"], "ready")

        # Switch while a batch of uploads is still being ingested by the worker.
        late = _upload(stack, _write_docs(tmp_path / "c", 2000, 10))
        r = stack.client.post(f"/v1/admin/reindex/{job['id']}/switch")
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "switched" and r.json()["serving"] == target
        stack.wait_indexed(late, timeout_s=300)
        time.sleep(1.0)  # questions keep coming after the switch, from the new collection

    assert questions.asked > 20
    assert questions.failures == [], questions.failures[:5]
    # The new model serves: questions are embedded by it and searched in its collection.
    serving = stack.services.profiles.get("default")
    assert serving.store.collection == target
    assert serving.embedder.dimension == HIDDEN
    # Every indexed document, and nothing else, is in the new collection.
    indexed = _indexed_ids(stack)
    assert indexed == (set(first) - set(deleted)) | set(during) | set(late)
    assert _collection_ids(stack, target) == indexed
    status = stack.client.get(f"/v1/admin/reindex/{job['id']}").json()
    assert status["documents_failed"] == 0 and status["can_rollback"] is True

    # Rollback until the old collection is dropped: it received the writes made after the
    # switch too, so it is complete.
    assert _collection_ids(stack, base) == indexed
    r = stack.client.post(f"/v1/admin/reindex/{job['id']}/rollback")
    assert r.status_code == 200 and r.json()["serving"] == base, r.text
    assert stack.services.profiles.get("default").embedder.dimension == 384
    ask = stack.client.post("/v1/query", json={"question": "glacier", "retrieval_only": True})
    assert ask.status_code == 200 and ask.json()["sources"]

    # Switch again and finish: the old collection is gone, the new one stays.
    assert stack.client.post(f"/v1/admin/reindex/{job['id']}/switch").status_code == 200
    r = stack.client.post(f"/v1/admin/reindex/{job['id']}/finish")
    assert r.status_code == 200 and r.json()["state"] == "done", r.text
    assert _collection_ids(stack, base) == set()
    assert stack.client.post(f"/v1/admin/reindex/{job['id']}/rollback").status_code == 409
    ask = stack.client.post("/v1/query", json={"question": "orchard", "retrieval_only": True})
    assert ask.status_code == 200 and ask.json()["sources"]


def test_abort_drops_the_new_collection_and_keeps_serving(stack: Stack, tmp_path: Path) -> None:
    base = stack.services.store.collection
    ids = _upload(stack, _write_docs(tmp_path / "a", 0, 12))
    stack.wait_indexed(ids, timeout_s=120)
    r = stack.client.post(
        "/v1/admin/reindex", json={"chunk_max_tokens": 32, "chunk_overlap_tokens": 4}
    )
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["target"]["embedding_profile"] == "default"
    _wait_state(stack, job["id"], "ready")
    target = job["target"]["collection"]
    # Smaller chunks: more points per document in the new collection.
    new_store: Any = stack.services.profiles.generation(Generation(target, "default", 32, 4)).store
    assert new_store.count_all() > stack.services.store.count_all()  # type: ignore[attr-defined]
    r = stack.client.post(f"/v1/admin/reindex/{job['id']}/abort")
    assert r.status_code == 200 and r.json()["state"] == "aborted", r.text
    assert new_store.document_ids() == set()
    assert stack.services.profiles.get("default").store.collection == base
    # Aborted jobs cannot be switched; a new re-index may start.
    assert stack.client.post(f"/v1/admin/reindex/{job['id']}/switch").status_code == 409
    again = stack.client.post("/v1/admin/reindex", json={"chunk_max_tokens": 64})
    assert again.status_code == 202, again.text
    assert again.json()["target"]["collection"] != target


def test_bad_requests_are_4xx(stack: Stack) -> None:
    c = stack.client
    assert c.get("/v1/admin/reindex/nope").status_code == 404
    assert c.post("/v1/admin/reindex/nope/switch").status_code == 404
    r = c.post("/v1/admin/reindex", json={"embedding_profile": "missing"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", r.text
    r = c.post("/v1/admin/reindex", json={"chunk_max_tokens": 64, "chunk_overlap_tokens": 64})
    assert r.status_code == 422, r.text
    assert c.post("/v1/admin/reindex", json={"bogus": 1}).status_code == 422
    assert c.get("/v1/admin/reindex").json()["jobs"] == []
