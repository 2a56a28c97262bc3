"""What the re-index needs of both embedded adapters beyond ChunkStore (CollectionAdmin): list
the documents a collection holds, and drop it. Local mode also moves a real collection alias."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from perimeter.backends.protocols import CollectionAdmin
from perimeter.backends.qdrant_edge_store import QdrantEdgeChunkStore
from perimeter.backends.qdrant_store import QdrantChunkStore
from perimeter.domain import ChunkRecord, SearchFilter, point_id_for

pytestmark = pytest.mark.integration


def _records(tenant: str, doc: str, n: int) -> list[ChunkRecord]:
    return [
        ChunkRecord(
            point_id=point_id_for(doc, i),
            tenant_id=tenant,
            document_id=doc,
            chunk_index=i,
            text=f"{doc} chunk {i}",
            filename=f"{doc}.txt",
            page=None,
            section=None,
            dense=[1.0, 0.0, 0.0] if i % 2 else [0.0, 1.0, 0.0],
            sparse=None,
        )
        for i in range(n)
    ]


@pytest.fixture(params=["edge", "local"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    s: Any = (
        QdrantEdgeChunkStore("c", root=tmp_path / "edge")
        if request.param == "edge"
        else QdrantChunkStore("c", path=tmp_path / "local")
    )
    yield s
    s.close()


def test_document_ids_and_drop(store: Any) -> None:
    assert store.document_ids() == set()  # no collection yet
    store.ensure_collection(3, sparse_idf=False)
    store.upsert(_records("t1", "a", 3) + _records("t1", "b", 1) + _records("t2", "c", 2))
    assert store.document_ids() == {("t1", "a"), ("t1", "b"), ("t2", "c")}
    assert store.document_ids("t2") == {("t2", "c")}
    store.delete_document("t1", "a")
    assert store.document_ids() == {("t1", "b"), ("t2", "c")}
    store.drop_collection()
    assert store.document_ids() == set()
    assert store.dense_search([1.0, 0.0, 0.0], SearchFilter(tenant_id="t1"), 5) == []
    # A dropped collection can be made again, empty.
    store.ensure_collection(3, sparse_idf=False)
    assert store.count_all() == 0


def test_local_mode_moves_a_real_alias(tmp_path: Path) -> None:
    base = QdrantChunkStore("g1", path=tmp_path / "local")
    g2 = base.sibling("g2")
    for s in (base, g2):
        s.ensure_collection(3, sparse_idf=False)
    assert isinstance(base, CollectionAdmin)
    base.point_alias("live", "g1")
    assert base.alias_target("live") == "g1"
    base.point_alias("live", "g2")
    assert base.alias_target("live") == "g2"
    base.close()
