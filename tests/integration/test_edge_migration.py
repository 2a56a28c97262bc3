"""An embedded local-mode folder (the store before Qdrant Edge) is migrated into Edge at
start-up: every point arrives with its vectors and payload, the old folder is kept under a new
name, and a copy interrupted half-way is finished by the next run. Also: the Edge store is the
embedded default, and a second process on its folder gets StoreUnavailable, not a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from perimeter.backends.edge_migration import migrate_local_to_edge
from perimeter.backends.errors import StoreUnavailable
from perimeter.backends.qdrant_edge_store import QdrantEdgeChunkStore
from perimeter.backends.qdrant_store import QdrantChunkStore
from perimeter.domain import ChunkRecord, SparseVector, point_id_for

pytestmark = pytest.mark.integration


def _records(document_id: str, n: int, dim: int, tenant: str = "t1") -> list[ChunkRecord]:
    return [
        ChunkRecord(
            point_id=point_id_for(document_id, i),
            tenant_id=tenant,
            document_id=document_id,
            chunk_index=i,
            text=f"{document_id} chunk {i}",
            filename=f"{document_id}.pdf",
            page=i,
            section=None,
            dense=[1.0 / (1 + i + k) for k in range(dim)],
            sparse=SparseVector(indices=[i, 1000 + i], values=[0.5, 1.5]) if i % 2 else None,
            metadata={"team": "red", "n": i},
            groups=["finance"] if i % 3 == 0 else [],
            kb="legal" if tenant == "t2" else "default",
        )
        for i in range(n)
    ]


def _build_local(folder: Path) -> dict[str, list[ChunkRecord]]:
    """A local-mode folder with the default collection (600 points: more than one batch) and
    a second profile's collection of another dimension."""
    store = QdrantChunkStore("perimeter_chunks", path=folder)
    other = store.sibling("perimeter_chunks__wide")
    written = {
        "perimeter_chunks": _records("doc-a", 400, 4) + _records("doc-b", 200, 4, tenant="t2"),
        "perimeter_chunks__wide": _records("doc-w", 7, 8),
    }
    store.ensure_collection(4, sparse_idf=True)
    other.ensure_collection(8, sparse_idf=False)
    store.upsert(written["perimeter_chunks"])
    other.upsert(written["perimeter_chunks__wide"])
    store.close()
    return written


def _normalised(rec: ChunkRecord) -> tuple[object, ...]:
    return (
        rec.point_id,
        rec.tenant_id,
        rec.document_id,
        rec.chunk_index,
        rec.text,
        rec.filename,
        rec.page,
        rec.section,
        (tuple(rec.sparse.indices), tuple(rec.sparse.values)) if rec.sparse else None,
        tuple(sorted(rec.metadata.items())),
        tuple(rec.groups or ["__public__"]),
        rec.kb,
    )


def test_migration_copies_every_point_and_keeps_the_old_folder(tmp_path: Path) -> None:
    legacy = tmp_path / "qdrant"
    written = _build_local(legacy)
    store = QdrantEdgeChunkStore("perimeter_chunks", root=tmp_path / "qdrant_edge")
    seen: list[tuple[str, int, int]] = []
    try:
        report = migrate_local_to_edge(legacy, store, progress=lambda *a: seen.append(a))
        assert report.points == {"perimeter_chunks": 600, "perimeter_chunks__wide": 7}
        assert not legacy.exists()
        assert report.kept_as is not None and report.kept_as.is_dir()
        assert report.kept_as.name.startswith("qdrant.migrated-")
        assert ("perimeter_chunks", 512, 600) in seen and ("perimeter_chunks", 600, 600) in seen

        for name, records in written.items():
            target = store if name == store.collection else store.sibling(name)
            try:
                got = list(target.scroll_records())
                assert sorted(map(_normalised, got)) == sorted(map(_normalised, records)), name
                dense = {r.point_id: r.dense for r in got}
                for r in records:  # stored unit-normalised (cosine), within float32
                    norm = sum(x * x for x in r.dense) ** 0.5
                    assert dense[r.point_id] == pytest.approx([x / norm for x in r.dense], abs=1e-6)
            finally:
                if target is not store:
                    target.close()
        # The migrated default collection serves the usual calls.
        store.ensure_collection(4, sparse_idf=True)
        assert store.count_document("t2", "doc-b") == 200
        store.delete_document("t1", "doc-a")
        assert store.count_all() == 200
    finally:
        store.close()


def test_an_interrupted_migration_is_finished_by_the_next_run(tmp_path: Path) -> None:
    legacy = tmp_path / "qdrant"
    written = _build_local(legacy)
    store = QdrantEdgeChunkStore("perimeter_chunks", root=tmp_path / "qdrant_edge")
    try:
        # A first run that died after copying part of the points: Edge holds 100 of them and the
        # old folder is still in place (it is renamed only after verification).
        store.ensure_collection(4, sparse_idf=True)
        store.upsert(written["perimeter_chunks"][:100])
        assert legacy.is_dir()
        report = migrate_local_to_edge(legacy, store)
        assert report.points["perimeter_chunks"] == 600
        assert store.count_all() == 600
        assert not legacy.exists()
    finally:
        store.close()


def test_start_up_migrates_the_embedded_folder(tmp_path: Path) -> None:
    from perimeter.composition import build_chunk_store, migrate_embedded_store
    from perimeter.settings import Settings

    settings = Settings(storage={"data_dir": tmp_path}, qdrant={"collection": "perimeter_chunks"})
    assert settings.qdrant.embedded == "edge"  # the default
    _build_local(tmp_path / "qdrant")
    store = build_chunk_store(settings)
    assert isinstance(store, QdrantEdgeChunkStore)
    try:
        migrate_embedded_store(settings, store)
        assert store.count_all() == 600
        migrate_embedded_store(settings, store)  # nothing left to migrate: a no-op
        assert store.count_all() == 600
        assert [p.name.split("-")[0] for p in tmp_path.glob("qdrant.migrated-*")] == [
            "qdrant.migrated"
        ]
    finally:
        store.close()


def test_a_second_process_on_the_folder_gets_store_unavailable(tmp_path: Path) -> None:
    store = QdrantEdgeChunkStore("c", root=tmp_path)
    store.ensure_collection(4, sparse_idf=True)
    store.upsert(_records("doc", 3, 4))
    try:
        code = (
            "import sys; from pathlib import Path\n"
            "from perimeter.backends.qdrant_edge_store import QdrantEdgeChunkStore\n"
            "from perimeter.backends.errors import StoreUnavailable\n"
            f"s = QdrantEdgeChunkStore('c', root=Path({str(tmp_path)!r}))\n"
            "try:\n    s.count_all()\nexcept StoreUnavailable as e:\n"
            "    print('unavailable', e); sys.exit(3)\n"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 3, proc.stderr
        assert "WouldBlock" in proc.stdout
        assert store.ping()  # this process still serves
    finally:
        store.close()
    # Once closed, the folder opens again (the WAL lock is released).
    again = QdrantEdgeChunkStore("c", root=tmp_path)
    try:
        assert again.count_all() == 3
    finally:
        again.close()
    with pytest.raises(StoreUnavailable):
        QdrantEdgeChunkStore("c", root=tmp_path / "missing")._require()


def test_cli_migrate_store(tmp_path: Path) -> None:
    import os

    _build_local(tmp_path / "qdrant")
    env = {
        **os.environ,
        "PERIMETER_STORAGE__DATA_DIR": str(tmp_path),
        "PERIMETER_QDRANT__COLLECTION": "perimeter_chunks",
    }
    env.pop("PERIMETER_QDRANT__URL", None)
    cmd = [sys.executable, "-m", "perimeter.cli", "admin", "migrate-store"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "old folder" in proc.stdout and "qdrant.migrated-" in proc.stdout
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "nothing to migrate" in again.stdout
    store = QdrantEdgeChunkStore("perimeter_chunks", root=tmp_path / "qdrant_edge")
    try:
        assert store.count_all() == 600
    finally:
        store.close()
