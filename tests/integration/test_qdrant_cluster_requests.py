"""What the server adapter sends to a Qdrant cluster: shard number, replication factor and write
consistency when it creates a collection, the tenant payload index, write ordering and read
consistency on every call, and the atomic alias switch of a re-index.

No Qdrant binary runs here, so a recording HTTP server on loopback answers as Qdrant's REST API
does and keeps every request; the real qdrant-client talks to it, so the test reads the JSON
bodies and query strings a real cluster would receive.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from perimeter.backends.qdrant_store import ClusterLayout, QdrantChunkStore
from perimeter.domain import ChunkRecord, SearchFilter, SparseVector
from perimeter.settings import QdrantSettings

pytestmark = pytest.mark.integration


class Recorder(ThreadingHTTPServer):
    requests: list[tuple[str, str, dict[str, list[str]], Any]]


class _Handler(BaseHTTPRequestHandler):
    server: Recorder

    def log_message(self, *_: Any) -> None:
        pass

    def _answer(self, method: str) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.server.requests.append((method, parts.path, parse_qs(parts.query), body))
        result: Any = True
        if parts.path == "/":
            payload: dict[str, Any] = {"title": "qdrant", "version": "1.20.0"}
        else:
            if parts.path.endswith("/exists"):
                # A collection exists once it was created through this server.
                made = parts.path.removesuffix("/exists")
                result = {"exists": any(r[:2] == ("PUT", made) for r in self.server.requests)}
            elif parts.path.endswith("/points/query"):
                result = {"points": []}
            elif "/points" in parts.path or parts.path.endswith("/index"):
                result = {"operation_id": 1, "status": "completed"}
            elif parts.path == "/aliases":
                result = {"aliases": []}
            payload = {"result": result, "status": "ok", "time": 0.0}
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._answer("GET")

    def do_PUT(self) -> None:
        self._answer("PUT")

    def do_POST(self) -> None:
        self._answer("POST")

    def do_DELETE(self) -> None:
        self._answer("DELETE")


@pytest.fixture
def qdrant() -> Iterator[Recorder]:
    server = Recorder(("127.0.0.1", 0), _Handler)
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _store(server: Recorder, cluster: ClusterLayout | None) -> QdrantChunkStore:
    host, port = server.server_address[:2]
    return QdrantChunkStore("chunks", url=f"http://{host!s}:{port}", cluster=cluster)


def _record() -> ChunkRecord:
    return ChunkRecord(
        point_id="7c9e6679-7425-40de-944b-e07fc1f90ae7",
        tenant_id="acme",
        document_id="d1",
        chunk_index=0,
        text="hello",
        filename="a.txt",
        page=None,
        section=None,
        dense=[0.1, 0.2, 0.3],
        sparse=SparseVector(indices=[1], values=[1.0]),
        metadata={},
        groups=[],
        kb="default",
    )


def test_a_cluster_collection_is_created_sharded_replicated_and_tenant_indexed(
    qdrant: Recorder,
) -> None:
    settings = QdrantSettings(
        shard_number=6,
        replication_factor=2,
        write_consistency_factor=1,
        read_consistency="majority",
    )
    store = _store(
        qdrant,
        ClusterLayout(
            settings.shard_number,
            settings.replication_factor,
            settings.write_consistency_factor,
            settings.read_consistency,
        ),
    )
    store.ensure_collection(3, sparse_idf=True)
    create = next(r for r in qdrant.requests if r[0] == "PUT" and r[1] == "/collections/chunks")
    body = create[3]
    assert body["shard_number"] == 6
    assert body["replication_factor"] == 2
    assert body["write_consistency_factor"] == 1
    assert body["vectors"]["dense"] == {"size": 3, "distance": "Cosine"}
    assert body["sparse_vectors"]["sparse"]["modifier"] == "idf"
    # Tenants are placed by Qdrant's multitenancy: the tenant field is a tenant index (its
    # points are stored together per tenant inside each shard).
    indexes = {
        r[3]["field_name"]: r[3]["field_schema"]
        for r in qdrant.requests
        if r[1] == "/collections/chunks/index"
    }
    assert indexes["tenant_id"] == {"type": "keyword", "is_tenant": True}
    assert {"document_id", "scope", "groups", "kb", "filename"} <= set(indexes)

    store.upsert([_record()])
    upsert = next(r for r in qdrant.requests if r[1] == "/collections/chunks/points")
    # With replicas, writes are ordered through each shard's leader, and acknowledged only
    # when searchable.
    assert upsert[2]["ordering"] == ["medium"] and upsert[2]["wait"] == ["true"]

    store.hybrid_search([0.1, 0.2, 0.3], None, SearchFilter(tenant_id="acme"), 5, 10)
    query = next(r for r in qdrant.requests if r[1] == "/collections/chunks/points/query")
    assert query[2]["consistency"] == ["majority"]

    store.delete_document("acme", "d1")
    delete = next(r for r in qdrant.requests if r[1] == "/collections/chunks/points/delete")
    assert delete[2]["ordering"] == ["medium"]


def test_a_single_node_gets_qdrant_defaults(qdrant: Recorder) -> None:
    # Compose runs one node: no cluster field is sent, so any Qdrant accepts the request.
    store = _store(qdrant, ClusterLayout())
    store.ensure_collection(3, sparse_idf=False)
    store.upsert([_record()])
    store.dense_search([0.1, 0.2, 0.3], SearchFilter(tenant_id="acme"), 5)
    create = next(r for r in qdrant.requests if r[0] == "PUT" and r[1] == "/collections/chunks")
    assert not {"shard_number", "replication_factor", "write_consistency_factor"} & set(
        k for k, v in create[3].items() if v is not None
    )
    upsert = next(r for r in qdrant.requests if r[1] == "/collections/chunks/points")
    assert "ordering" not in upsert[2]
    query = next(r for r in qdrant.requests if r[1] == "/collections/chunks/points/query")
    assert "consistency" not in query[2]


def test_the_alias_switch_is_one_atomic_request(qdrant: Recorder) -> None:
    store = _store(qdrant, None)
    store.point_alias("chunks__live", "chunks__g2")
    calls = [r for r in qdrant.requests if r[1] == "/collections/aliases"]
    assert len(calls) == 1
    assert calls[0][3]["actions"] == [
        {"delete_alias": {"alias_name": "chunks__live"}},
        {"create_alias": {"collection_name": "chunks__g2", "alias_name": "chunks__live"}},
    ]


def test_write_consistency_above_replication_is_refused() -> None:
    with pytest.raises(ValueError, match="write_consistency_factor"):
        QdrantSettings(replication_factor=2, write_consistency_factor=3)
