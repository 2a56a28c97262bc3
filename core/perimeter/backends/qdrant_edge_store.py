"""Chunk store on Qdrant Edge (``qdrant-edge-py``): the Qdrant engine itself, in-process.

The embedded default. Each collection is one Edge shard in its own folder under the store's
root (``<root>/<collection>/``), with the same schema and query semantics as the server adapter
(:mod:`perimeter.backends.qdrant_store`): named dense (cosine) + sparse (optional IDF) vectors,
the payload it writes, filters inside every prefetch, RRF/DBSF fusion.

Limits designed around (measured in ``/work/shared/notes/qdrant-edge.md`` and
docs/operations.md, "Embedded vector store"):

- Every Edge call holds the GIL for its whole duration. Calls are thread-safe but serialised,
  so nothing here ever calls ``optimize()`` (building HNSW froze the process for minutes at
  100k points): searches are exact (brute force over the shard's plain segments), which
  measured a few milliseconds per hybrid query at 100k chunks and returns the same top-k as
  local mode and an exact server search.
- One process per shard folder: a second open fails on the WAL lock; that is reported as
  :class:`StoreUnavailable`, like a server that cannot be reached.
- The WAL stays on (the default): without it a kill loses acknowledged points.
"""

from __future__ import annotations

import copy
import functools
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from perimeter.backends.errors import StoreUnavailable
from perimeter.backends.qdrant_payload import (
    DENSE,
    PUBLIC_GROUP,
    SPARSE,
    UPSERT_BATCH,
    chunk_payload,
    scope_of,
    scored_chunk,
)
from perimeter.domain import (
    ChunkRecord,
    ContextQuery,
    ScoredChunk,
    SearchFilter,
    SparseVector,
    fusion_queries,
    point_id_for,
)

if TYPE_CHECKING:
    import qdrant_edge as qe

# Qdrant's own default RRF constant: the server adapter sends a plain RRF fusion (no k) unless
# one is configured, and the server then uses 2. Edge's Fusion.Rrf needs k explicitly.
QDRANT_DEFAULT_RRF_K = 2

T = TypeVar("T")


def _iso(value: str | None) -> str | None:
    # Parsed first so that a malformed bound fails here exactly as in the server adapter
    # (datetime.fromisoformat), and the engine always receives one canonical form.
    return datetime.fromisoformat(value).isoformat() if value else None


class QdrantEdgeChunkStore:
    """``root``: the folder that holds one shard folder per collection."""

    def __init__(
        self,
        collection: str,
        root: Path,
        fusion: str = "rrf",
        rrf_k: int | None = None,
        dense_weight: float = 1.0,
        sparse_weight: float = 1.0,
    ) -> None:
        self._collection = collection
        self._root = root
        self._fusion = fusion
        self._rrf_k = rrf_k
        self._weights = (dense_weight, sparse_weight)
        self._shard: qe.EdgeShard | None = None
        self._lock = threading.RLock()
        self._ready = False

    @property
    def collection(self) -> str:
        return self._collection

    @property
    def path(self) -> Path:
        """This collection's shard folder."""
        return self._root / self._collection

    def sibling(self, collection: str) -> QdrantEdgeChunkStore:
        """The same store on another collection: another shard folder under the same root."""
        other = copy.copy(self)
        other._collection = collection
        other._shard = None
        other._ready = False
        other._lock = threading.RLock()
        return other

    # -- shard lifecycle -------------------------------------------------------------------
    def _exists(self) -> bool:
        # Edge writes edge_config.json when it creates a shard; a folder without it is not one.
        return (self.path / "edge_config.json").is_file()

    def _config(self, dense_dim: int, sparse_idf: bool) -> qe.EdgeConfig:
        import qdrant_edge as qe

        return qe.EdgeConfig(
            vectors={DENSE: qe.EdgeVectorParams(size=dense_dim, distance=qe.Distance.Cosine)},
            sparse_vectors={
                SPARSE: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf if sparse_idf else None)
            },
        )

    def _open(self) -> qe.EdgeShard | None:
        """The open shard, opening an existing one on first use; None while none exists."""
        shard = self._shard
        if shard is not None:
            return shard
        with self._lock:
            if self._shard is None and self._exists():
                import qdrant_edge as qe

                self._shard = self._engine(lambda: qe.EdgeShard.load(str(self.path)), "open")
            return self._shard

    def _engine(self, call: Callable[[], T], what: str) -> T:
        """Run one engine call; an engine failure (folder locked by another process, I/O
        error, closed shard) becomes StoreUnavailable, the one type callers handle."""
        try:
            return call()
        except StoreUnavailable:
            raise
        except Exception as exc:
            raise StoreUnavailable(
                f"embedded vector store {self.path} failed to {what}: {exc}"
            ) from exc

    # -- schema ----------------------------------------------------------------------------
    def ensure_collection(self, dense_dim: int, sparse_idf: bool) -> None:
        import qdrant_edge as qe

        if self._ready:
            return
        with self._lock:
            if self._ready:
                return
            if not self._exists():
                self.path.mkdir(parents=True, exist_ok=True)
                config = self._config(dense_dim, sparse_idf)
                shard = self._engine(lambda: qe.EdgeShard.create(str(self.path), config), "create")
                self._shard = shard
                # The same indexes a server collection gets; scope is the tenant key (one
                # condition per search, the knowledge base's scope), chunk_index serves the
                # range of tail deletes.
                for field, schema in (
                    ("tenant_id", qe.KeywordIndexParams()),
                    ("scope", qe.KeywordIndexParams(is_tenant=True)),
                    ("document_id", qe.KeywordIndexParams()),
                    ("filename", qe.KeywordIndexParams()),
                    ("groups", qe.KeywordIndexParams()),
                    ("kb", qe.KeywordIndexParams()),
                    ("chunk_index", qe.IntegerIndexParams(lookup=False, range=True)),
                ):
                    self._create_index(field, schema)
            else:
                shard_or_none = self._open()
                assert shard_or_none is not None
                existing = self._dense_dim()
                if existing is not None and existing != dense_dim:
                    raise RuntimeError(
                        f"collection {self._collection!r} holds {existing}-d vectors but the "
                        f"embedder makes {dense_dim}-d ones; re-embed into a new collection "
                        "(docs/operations.md, 'changing the embedding model')"
                    )
            self._ready = True

    def _dense_dim(self) -> int | None:
        import json

        try:
            config = json.loads((self.path / "edge_config.json").read_text())
        except (OSError, ValueError):
            return None
        size = (config.get("vectors") or {}).get(DENSE, {}).get("size")
        return int(size) if size is not None else None

    def _create_index(self, field: str, schema: Any) -> None:
        import qdrant_edge as qe

        shard = self._require()
        self._engine(
            lambda: shard.update(qe.UpdateOperation.create_field_index(field, schema)),
            f"index {field}",
        )

    def create_metadata_index(self, key: str) -> None:
        import qdrant_edge as qe

        if self._open() is None:
            return
        self._create_index(f"metadata.{key}", qe.PayloadSchemaType.Keyword)

    # -- writes ----------------------------------------------------------------------------
    def upsert(self, records: Sequence[ChunkRecord]) -> None:
        import qdrant_edge as qe

        shard = self._require()
        for start in range(0, len(records), UPSERT_BATCH):
            batch = records[start : start + UPSERT_BATCH]
            points = []
            for r in batch:
                vector: dict[str, Any] = {DENSE: r.dense}
                if r.sparse is not None and r.sparse.indices:
                    vector[SPARSE] = qe.SparseVector(
                        indices=list(r.sparse.indices), values=list(r.sparse.values)
                    )
                points.append(qe.Point(r.point_id, vector, chunk_payload(r)))
            operation = qe.UpdateOperation.upsert_points(points)
            # Synchronous: the WAL has the batch and the points are searchable on return, so
            # the task reports "indexed" only once they are.
            self._engine(functools.partial(shard.update, operation), "upsert")

    def delete_document(self, tenant_id: str, document_id: str) -> None:
        import qdrant_edge as qe

        shard = self._open()
        if shard is None:
            return
        flt = self._filter(SearchFilter(tenant_id=tenant_id, document_ids=[document_id]))
        self._engine(
            lambda: shard.update(qe.UpdateOperation.delete_points_by_filter(flt)), "delete"
        )

    def delete_document_tail(self, tenant_id: str, document_id: str, keep: int) -> None:
        """Drop chunks with index >= keep, so a re-run that chunked differently leaves no
        stragglers."""
        import qdrant_edge as qe

        shard = self._open()
        if shard is None:
            return
        # A document's chunks hold the indices 0..n-1 with no gap (see the server adapter): when
        # chunk `keep` is absent there is no tail, and one lookup by id settles it.
        probe = point_id_for(document_id, keep)
        if not self._engine(lambda: shard.retrieve([probe], False, False), "retrieve"):
            return
        flt = self._filter(
            SearchFilter(tenant_id=tenant_id, document_ids=[document_id]),
            extra=[qe.FieldCondition(key="chunk_index", range=qe.RangeFloat(gte=float(keep)))],
        )
        self._engine(
            lambda: shard.update(qe.UpdateOperation.delete_points_by_filter(flt)), "delete"
        )

    # -- reads -----------------------------------------------------------------------------
    def count_document(self, tenant_id: str, document_id: str) -> int:
        import qdrant_edge as qe

        shard = self._open()
        if shard is None:
            return 0
        flt = self._filter(SearchFilter(tenant_id=tenant_id, document_ids=[document_id]))
        return int(
            self._engine(lambda: shard.count(qe.CountRequest(exact=True, filter=flt)), "count")
        )

    def count_all(self) -> int:
        import qdrant_edge as qe

        shard = self._open()
        if shard is None:
            return 0
        return int(self._engine(lambda: shard.count(qe.CountRequest(exact=True)), "count"))

    def hybrid_search(
        self,
        dense: list[float],
        sparse: SparseVector | None,
        flt: SearchFilter,
        limit: int,
        prefetch_limit: int,
        context: Sequence[ContextQuery] = (),
    ) -> list[ScoredChunk]:
        import qdrant_edge as qe

        shard = self._open()
        if shard is None:
            return []
        qfilter = self._filter(flt)
        exact = qe.SearchParams(exact=True)
        prefetch = []
        weights: list[float] = []
        for query in fusion_queries(dense, sparse, context, self._fusion):
            s_vec = query.sparse
            prefetch.append(
                qe.Prefetch(
                    limit=prefetch_limit,
                    query=qe.Query.Nearest(query.dense, using=DENSE),
                    filter=qfilter,
                    params=exact,
                )
            )
            weights.append(self._weights[0] * query.weight)
            if s_vec is not None and s_vec.indices:
                prefetch.append(
                    qe.Prefetch(
                        limit=prefetch_limit,
                        query=qe.Query.Nearest(
                            qe.SparseVector(indices=list(s_vec.indices), values=list(s_vec.values)),
                            using=SPARSE,
                        ),
                        filter=qfilter,
                    )
                )
                weights.append(self._weights[1] * query.weight)
        request = qe.QueryRequest(
            limit=limit,
            prefetches=prefetch,
            query=self._fusion_query(weights),
            filter=qfilter,
            with_payload=True,
            with_vector=[DENSE],
        )
        points = self._engine(lambda: shard.query(request), "search")
        return [scored_chunk(p, query_dense=dense) for p in points]

    def _fusion_query(self, weights: list[float]) -> Any:
        """DBSF, or RRF with the configured k (Qdrant's default 2 when unset) and the prefetches'
        weights (per query: dense, then sparse), as the server adapter sends them."""
        import qdrant_edge as qe

        if self._fusion == "dbsf":
            return qe.Fusion.Dbsf()
        k = QDRANT_DEFAULT_RRF_K if self._rrf_k is None else self._rrf_k
        return qe.Fusion.Rrf(k, None if all(w == 1.0 for w in weights) else weights)

    def dense_search(self, dense: list[float], flt: SearchFilter, limit: int) -> list[ScoredChunk]:
        import qdrant_edge as qe

        shard = self._open()
        if shard is None:
            return []
        request = qe.QueryRequest(
            limit=limit,
            query=qe.Query.Nearest(dense, using=DENSE),
            filter=self._filter(flt),
            params=qe.SearchParams(exact=True),
            with_payload=True,
        )
        points = self._engine(lambda: shard.query(request), "search")
        return [scored_chunk(p, dense_score=float(p.score)) for p in points]

    def sparse_search(
        self, sparse: SparseVector, flt: SearchFilter, limit: int
    ) -> list[ScoredChunk]:
        import qdrant_edge as qe

        shard = self._open()
        if shard is None or not sparse.indices:
            return []
        request = qe.QueryRequest(
            limit=limit,
            query=qe.Query.Nearest(
                qe.SparseVector(indices=list(sparse.indices), values=list(sparse.values)),
                using=SPARSE,
            ),
            filter=self._filter(flt),
            with_payload=True,
        )
        points = self._engine(lambda: shard.query(request), "search")
        return [scored_chunk(p) for p in points]

    def scroll_records(self, batch: int = 512) -> Iterator[ChunkRecord]:
        """Every stored chunk with its vectors (migration checks, exports)."""
        import qdrant_edge as qe

        shard = self._open()
        if shard is None:
            return
        offset: Any = None
        while True:
            request = qe.ScrollRequest(
                offset=offset, limit=batch, with_payload=True, with_vector=True
            )
            records, offset = self._engine(functools.partial(shard.scroll, request), "scroll")
            for rec in records:
                yield _record(str(rec.id), rec.payload or {}, rec.vector)
            if offset is None:
                return

    def document_ids(self, tenant_id: str | None = None) -> set[tuple[str, str]]:
        """(tenant id, document id) of every document with chunks here (re-index reconcile):
        a scroll over payloads, no vectors."""
        import qdrant_edge as qe

        shard = self._open()
        if shard is None:
            return set()
        found: set[tuple[str, str]] = set()
        offset: Any = None
        while True:
            request = qe.ScrollRequest(
                offset=offset, limit=1024, with_payload=True, with_vector=False
            )
            records, offset = self._engine(functools.partial(shard.scroll, request), "scroll")
            for rec in records:
                payload = rec.payload or {}
                pair = (str(payload.get("tenant_id", "")), str(payload.get("document_id", "")))
                if tenant_id is None or pair[0] == tenant_id:
                    found.add(pair)
            if offset is None:
                return found

    def drop_collection(self) -> None:
        """Close the shard and remove its folder (a re-index dropping the generation it
        replaced, or the one it aborted)."""
        import shutil

        with self._lock:
            self.close()
            if self.path.exists():
                shutil.rmtree(self.path)
            self._ready = False

    def missing_ids(self, point_ids: Sequence[str]) -> list[str]:
        """The ids of ``point_ids`` that the store does not hold (migration verification)."""
        shard = self._open()
        if shard is None:
            return list(point_ids)
        found = self._engine(lambda: shard.retrieve(list(point_ids), False, False), "retrieve")
        have = {str(r.id) for r in found}
        return [p for p in point_ids if p not in have]

    def ping(self) -> bool:
        try:
            shard = self._open()
            if shard is not None:
                self._engine(lambda: shard.count(_count_nothing()), "count")
            return True
        except Exception:
            return False

    def flush(self) -> None:
        shard = self._open()
        if shard is not None:
            self._engine(shard.flush, "flush")

    def close(self) -> None:
        with self._lock:
            if self._shard is not None:
                shard, self._shard = self._shard, None
                self._ready = False
                # close() flushes and releases the folder's WAL lock for the next process.
                self._engine(shard.close, "close")

    # -- helpers ---------------------------------------------------------------------------
    def _require(self) -> qe.EdgeShard:
        shard = self._open()
        if shard is None:
            raise StoreUnavailable(
                f"embedded vector store {self.path} has no collection yet "
                "(ensure_collection runs at start-up)"
            )
        return shard

    @staticmethod
    def _filter(flt: SearchFilter, extra: list[Any] | None = None) -> qe.Filter:
        """The server adapter's filter, condition for condition (qdrant_store._filter)."""
        import qdrant_edge as qe

        must: list[Any] = [
            qe.FieldCondition(key="tenant_id", match=qe.MatchValue(flt.tenant_id))
            if flt.kb is None
            else qe.FieldCondition(
                key="scope", match=qe.MatchValue(scope_of(flt.tenant_id, flt.kb))
            )
        ]
        if flt.document_ids is not None:
            must.append(
                qe.FieldCondition(key="document_id", match=qe.MatchAny(list(flt.document_ids)))
            )
        if flt.filenames is not None:
            must.append(qe.FieldCondition(key="filename", match=qe.MatchAny(list(flt.filenames))))
        for key, value in (flt.metadata or {}).items():
            match: Any = (
                qe.MatchAny(list(value)) if isinstance(value, list) else qe.MatchValue(value)
            )
            must.append(qe.FieldCondition(key=f"metadata.{key}", match=match))
        for key, (gte, lte) in (flt.date_ranges or {}).items():
            must.append(
                qe.FieldCondition(
                    key=f"metadata.{key}", range=qe.RangeDateTime(gte=_iso(gte), lte=_iso(lte))
                )
            )
        if flt.groups is not None:
            must.append(
                qe.FieldCondition(key="groups", match=qe.MatchAny([PUBLIC_GROUP, *flt.groups]))
            )
        must.extend(extra or [])
        return qe.Filter(must=must)


def _count_nothing() -> qe.CountRequest:
    import qdrant_edge as qe

    # A cheap round trip through the engine: exact count of an impossible filter.
    return qe.CountRequest(
        exact=True,
        filter=qe.Filter(must=[qe.FieldCondition(key="scope", match=qe.MatchValue("\x00"))]),
    )


def _record(point_id: str, payload: dict[str, Any], vector: Any) -> ChunkRecord:
    """A stored point back as the ChunkRecord that wrote it (migration, verification)."""
    from perimeter.domain import DEFAULT_KB

    vectors = vector if isinstance(vector, dict) else {}
    raw_sparse = vectors.get(SPARSE)
    sparse = None
    if raw_sparse is not None:
        sparse = SparseVector(indices=list(raw_sparse.indices), values=list(raw_sparse.values))
    return ChunkRecord(
        point_id=point_id,
        tenant_id=payload.get("tenant_id", ""),
        document_id=payload.get("document_id", ""),
        chunk_index=int(payload.get("chunk_index", 0)),
        text=payload.get("text", ""),
        filename=payload.get("filename", ""),
        page=payload.get("page"),
        section=payload.get("section"),
        dense=list(vectors.get(DENSE) or []),
        sparse=sparse,
        metadata=payload.get("metadata") or {},
        groups=list(payload.get("groups") or [PUBLIC_GROUP]),
        kb=payload.get("kb") or DEFAULT_KB,
        ocr_confidence=payload.get("ocr_confidence"),
    )
