"""QdrantChunkStore.delete_document_tail on local-mode Qdrant: it drops exactly the chunks with
index >= keep, of that document only, and costs one lookup by id when there is no tail."""

from __future__ import annotations

from pathlib import Path

import pytest

from perimeter.backends.qdrant_store import QdrantChunkStore
from perimeter.domain import ChunkRecord, point_id_for

pytestmark = pytest.mark.integration

TENANT = "default"


def _records(document_id: str, n: int, tag: str) -> list[ChunkRecord]:
    return [
        ChunkRecord(
            point_id=point_id_for(document_id, i),
            tenant_id=TENANT,
            document_id=document_id,
            chunk_index=i,
            text=f"{tag} chunk {i}",
            filename=f"{document_id}.txt",
            page=None,
            section=None,
            dense=[1.0, float(i), 0.5, 0.25],
            sparse=None,
            metadata={},
            groups=[],
        )
        for i in range(n)
    ]


def _indices(store: QdrantChunkStore, document_id: str) -> list[int]:
    points, _next = store.client.scroll(store.collection, limit=1000, with_payload=True)
    return sorted(
        int(p.payload["chunk_index"])
        for p in points
        if p.payload is not None and p.payload["document_id"] == document_id
    )


def test_tail_is_dropped_for_that_document_only(tmp_path: Path) -> None:
    store = QdrantChunkStore("tail", path=tmp_path / "qdrant")
    try:
        store.ensure_collection(4, sparse_idf=True)
        store.upsert(_records("doc-a", 6, "first run"))
        store.upsert(_records("doc-b", 6, "other document"))

        # A re-run that chunked into 3: chunks 3..5 of the first run are stragglers.
        store.upsert(_records("doc-a", 3, "second run"))
        store.delete_document_tail(TENANT, "doc-a", keep=3)
        assert _indices(store, "doc-a") == [0, 1, 2]
        assert _indices(store, "doc-b") == [0, 1, 2, 3, 4, 5]

        # No tail: nothing changes (the lookup by id finds no chunk 3).
        store.delete_document_tail(TENANT, "doc-a", keep=3)
        store.delete_document_tail(TENANT, "doc-a", keep=7)
        assert _indices(store, "doc-a") == [0, 1, 2]

        # A longer re-run, then a shorter one again.
        store.upsert(_records("doc-a", 5, "third run"))
        store.delete_document_tail(TENANT, "doc-a", keep=5)
        assert _indices(store, "doc-a") == [0, 1, 2, 3, 4]
        store.delete_document_tail(TENANT, "doc-a", keep=1)
        assert _indices(store, "doc-a") == [0]
        assert store.count_document(TENANT, "doc-b") == 6

        # Another tenant's call never touches this tenant's chunks.
        store.delete_document_tail("someone-else", "doc-b", keep=0)
        assert store.count_document(TENANT, "doc-b") == 6
    finally:
        store.close()
