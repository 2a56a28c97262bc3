"""One-time copy of an embedded qdrant-client local-mode folder into the Qdrant Edge store.

Before Qdrant Edge the embedded default kept its vectors in ``<data_dir>/qdrant`` (local mode).
Start-up (``Services.ensure_ready``) and ``perimeter admin migrate-store`` call this; it:

1. copies every collection of the folder, point for point (same ids, vectors and payload), into
   an Edge shard of the same name, logging progress;
2. verifies that every copied id is in Edge and that the counts match;
3. only then renames the folder to ``qdrant.migrated-<UTC time>`` (kept, never deleted: remove
   it by hand once satisfied).

Crash-safe by construction: until the rename the old folder is the source of truth, and a
re-run copies again (upserts by the same ids are idempotent).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from perimeter.backends.qdrant_edge_store import QdrantEdgeChunkStore, _record
from perimeter.backends.qdrant_payload import DENSE, SPARSE
from perimeter.domain import ChunkRecord

log = logging.getLogger(__name__)

BATCH = 512


@dataclass
class MigrationReport:
    legacy: Path
    kept_as: Path | None = None
    points: dict[str, int] = field(default_factory=dict)  # collection -> points copied
    seconds: float = 0.0


def _edge_record(point: Any) -> ChunkRecord:
    vectors = point.vector if isinstance(point.vector, dict) else {}
    sparse = vectors.get(SPARSE)
    # qdrant-client's SparseVector and Edge's expose the same indices/values attributes.
    return _record(str(point.id), point.payload or {}, {DENSE: vectors.get(DENSE), SPARSE: sparse})


def migrate_local_to_edge(
    legacy: Path,
    store: QdrantEdgeChunkStore,
    progress: Callable[[str, int, int], None] | None = None,
) -> MigrationReport:
    """Copy ``legacy`` (a local-mode folder) into ``store``'s root; ``progress(collection, done,
    total)`` after each batch (logged when not given). Raises RuntimeError, leaving the old
    folder in place, when verification fails."""
    from qdrant_client import QdrantClient

    started = time.monotonic()
    report = MigrationReport(legacy=legacy)
    client = QdrantClient(path=str(legacy))
    try:
        names = [c.name for c in client.get_collections().collections]
        log.info("migrating embedded store %s into Qdrant Edge: collections %s", legacy, names)
        for name in names:
            target = store if name == store.collection else store.sibling(name)
            try:
                report.points[name] = _copy(client, name, target, progress)
            finally:
                if target is not store:
                    # Release the sibling's folder: its profile opens it again later.
                    target.close()
    finally:
        client.close()
    kept = legacy.with_name(f"{legacy.name}.migrated-{datetime.now(UTC):%Y%m%dT%H%M%SZ}")
    legacy.rename(kept)
    report.kept_as = kept
    report.seconds = time.monotonic() - started
    log.info(
        "migrated %d points in %.1f s; the old folder is kept as %s (delete it once satisfied)",
        sum(report.points.values()),
        report.seconds,
        kept,
    )
    return report


def _copy(
    client: Any,
    name: str,
    target: QdrantEdgeChunkStore,
    progress: Callable[[str, int, int], None] | None,
) -> int:
    info = client.get_collection(name)
    vectors = info.config.params.vectors
    dense = vectors.get(DENSE) if isinstance(vectors, dict) else None
    if dense is None:
        raise RuntimeError(f"collection {name!r} has no {DENSE!r} vector: not a Perimeter store")
    sparse_config = (info.config.params.sparse_vectors or {}).get(SPARSE)
    idf = sparse_config is not None and sparse_config.modifier is not None
    target.ensure_collection(int(dense.size), sparse_idf=idf)
    total = int(client.count(name, exact=True).count)
    done = 0
    offset: Any = None
    while True:
        points, offset = client.scroll(
            name, limit=BATCH, offset=offset, with_payload=True, with_vectors=True
        )
        if points:
            records = [_edge_record(p) for p in points]
            target.upsert(records)
            missing = target.missing_ids([r.point_id for r in records])
            if missing:
                raise RuntimeError(
                    f"migration of {name!r}: {len(missing)} points not found in Qdrant Edge "
                    f"after the copy (first {missing[0]}); the old folder is left in place"
                )
            done += len(records)
            if progress is not None:
                progress(name, done, total)
            else:
                log.info("migrating %s: %d/%d points", name, done, total)
        if offset is None:
            break
    target.flush()
    copied = target.count_all()
    if copied < total or done != total:
        raise RuntimeError(
            f"migration of {name!r}: local mode holds {total} points, {done} read, Edge holds "
            f"{copied}; the old folder is left in place"
        )
    return done
