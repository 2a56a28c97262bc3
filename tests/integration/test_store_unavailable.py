"""Qdrant server down (a closed port): the store raises StoreUnavailable from every public method,
and every API route that needs it answers 503 JSON naming the URL, with no traceback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from perimeter.backends.qdrant_store import QdrantChunkStore, StoreUnavailable
from perimeter.domain import ChunkRecord, SearchFilter, SparseVector
from tests import docfactory as df
from tests.conftest import _purge_queue, free_port, make_settings, upload_files

pytestmark = pytest.mark.integration

FLT = SearchFilter(tenant_id="default")
RECORD = ChunkRecord(
    point_id="00000000-0000-0000-0000-000000000001",
    tenant_id="default",
    document_id="d",
    chunk_index=0,
    text="t",
    filename="f.txt",
    page=None,
    section=None,
    dense=[0.1] * 4,
    sparse=None,
    metadata={},
    groups=[],
)

CALLS: dict[str, Callable[[QdrantChunkStore], Any]] = {
    "ensure_collection": lambda s: s.ensure_collection(4, sparse_idf=True),
    "create_metadata_index": lambda s: s.create_metadata_index("team"),
    "upsert": lambda s: s.upsert([RECORD]),
    "delete_document": lambda s: s.delete_document("default", "d"),
    "delete_document_tail": lambda s: s.delete_document_tail("default", "d", keep=1),
    "count_document": lambda s: s.count_document("default", "d"),
    "count_all": lambda s: s.count_all(),
    "hybrid_search": lambda s: s.hybrid_search(
        [0.1] * 4, SparseVector(indices=[1], values=[1.0]), FLT, 5, 10
    ),
    "dense_search": lambda s: s.dense_search([0.1] * 4, FLT, 5),
    "sparse_search": lambda s: s.sparse_search(SparseVector(indices=[1], values=[1.0]), FLT, 5),
}


@pytest.mark.parametrize("method", sorted(CALLS))
def test_every_store_method_raises_store_unavailable_naming_the_url(method: str) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    store = QdrantChunkStore("c", url=url, timeout_s=2)
    try:
        with pytest.raises(StoreUnavailable) as caught:
            CALLS[method](store)
        assert caught.value.where == url
        assert url in str(caught.value)
        assert store.ping() is False
    finally:
        store.close()


def test_other_store_errors_are_not_disguised_as_unavailable(tmp_path: Path) -> None:
    from qdrant_client.http.exceptions import UnexpectedResponse

    from perimeter.backends.qdrant_store import _unreachable

    assert not _unreachable(UnexpectedResponse(400, "Bad Request", b"{}", None))  # type: ignore[arg-type]
    assert _unreachable(UnexpectedResponse(503, "Service Unavailable", b"", None))  # type: ignore[arg-type]
    assert not _unreachable(ValueError("bad vector"))


@pytest.fixture
def down(tmp_path: Path, shared_embedder: Any) -> Iterator[tuple[Any, str]]:
    from fastapi.testclient import TestClient

    from perimeter.api.app import create_app
    from perimeter.composition import build_services

    url = f"http://127.0.0.1:{free_port()}"
    settings = make_settings(
        tmp_path,
        qdrant={"url": url, "timeout_s": 2},
        llm={"base_url": f"http://127.0.0.1:{free_port()}/v1", "max_retries": 0},
    )
    services = build_services(settings, embedder=shared_embedder)
    try:
        with TestClient(create_app(services=services), raise_server_exceptions=False) as client:
            yield client, url
    finally:
        services.close()
        _purge_queue(settings)


def _assert_503(response: Any, url: str) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"].isdigit()
    error = response.json()["error"]
    assert error["code"] == "vector_store_unavailable"
    assert error["message"].startswith(f"Qdrant not reachable at {url}; is the service up?")
    assert "Traceback" not in response.text and "ResponseHandlingException" not in response.text


def test_document_and_query_routes_answer_503_when_qdrant_is_down(
    down: tuple[Any, str], tmp_path: Path
) -> None:
    client, url = down
    path = df.make_txt(tmp_path / "leave.txt", ["Employees get 25 days of annual leave."])

    # Accepting a file needs no vector store: the row is durable, the worker retries later.
    uploaded = upload_files(client, path)
    assert uploaded.status_code == 202, uploaded.text
    doc_id = uploaded.json()["documents"][0]["document_id"]
    listed = client.get("/v1/documents")
    assert listed.status_code == 200
    assert [d["id"] for d in listed.json()["documents"]] == [doc_id]
    assert client.get(f"/v1/documents/{doc_id}").status_code == 200

    # Deleting must remove the chunks first, so it needs Qdrant: 503, and the row stays.
    _assert_503(client.delete(f"/v1/documents/{doc_id}"), url)
    assert client.get(f"/v1/documents/{doc_id}").status_code == 200

    for body in (
        {"question": "How many days of leave?"},
        {"question": "How many days of leave?", "retrieval_only": True},
        {"question": "How many days of leave?", "stream": True},
    ):
        _assert_503(client.post("/v1/query", json=body), url)
