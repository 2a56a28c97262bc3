"""Chunk store on Qdrant: named dense + sparse vectors in one collection, hybrid Query API.

The same code serves a Qdrant server (production) and qdrant-client's local mode on a folder
(embedded default). Local mode locks its folder, so only one process may open it.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    from qdrant_client import QdrantClient
    from qdrant_client.http import models as qm


def _datetime(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


class _Serialized:
    """Proxy that runs each method of the wrapped object under one re-entrant lock."""

    def __init__(self, target: Any) -> None:
        self._target = target
        self._lock = threading.RLock()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return attr(*args, **kwargs)

        return call


def _unreachable(exc: BaseException) -> bool:
    """Connection refused, DNS failure, timeout, or a proxy in front answering 502/503/504."""
    import httpx
    from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

    if isinstance(exc, UnexpectedResponse):
        return exc.status_code in (502, 503, 504)
    return isinstance(
        exc, ResponseHandlingException | httpx.TransportError | ConnectionError | TimeoutError
    )


class _Unavailable:
    """Proxy for a Qdrant *server* client: every call that fails because the server cannot be
    reached raises StoreUnavailable naming the URL, so every public method of the store (and
    every caller above it) sees one exception type for "Qdrant is down"."""

    def __init__(self, target: Any, url: str) -> None:
        self._target = target
        self._url = url

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return attr(*args, **kwargs)
            except Exception as exc:
                if _unreachable(exc):
                    raise StoreUnavailable(
                        f"Qdrant not reachable at {self._url}: {exc}", where=self._url
                    ) from exc
                raise

        return call


@dataclass(frozen=True, slots=True)
class ClusterLayout:
    """How a collection is laid out on a Qdrant cluster (qdrant.* settings). None fields are
    left out of the request, so Qdrant's own defaults apply and a single node accepts it."""

    shard_number: int | None = None
    replication_factor: int | None = None
    write_consistency_factor: int | None = None
    # "all" / "majority" / "quorum" or a replica count.
    read_consistency: str | int | None = None

    def create_args(self) -> dict[str, Any]:
        args = {
            "shard_number": self.shard_number,
            "replication_factor": self.replication_factor,
            "write_consistency_factor": self.write_consistency_factor,
        }
        return {k: v for k, v in args.items() if v is not None}

    def write_args(self) -> dict[str, Any]:
        # With replicas, "medium" ordering sends every write of a shard through its elected
        # leader, so two replicas never apply concurrent writes of one point (a re-run of a
        # document during its deletion) in different orders; "weak" (the default) may.
        from qdrant_client.http import models as qm

        if (self.replication_factor or 1) < 2:
            return {}
        return {"ordering": qm.WriteOrdering.MEDIUM}

    def read_args(self) -> dict[str, Any]:
        from qdrant_client.http import models as qm

        if self.read_consistency is None:
            return {}
        if isinstance(self.read_consistency, int):
            return {"consistency": self.read_consistency}
        return {"consistency": qm.ReadConsistencyType(self.read_consistency)}


class QdrantChunkStore:
    def __init__(
        self,
        collection: str,
        url: str | None = None,
        path: Path | None = None,
        api_key: str | None = None,
        timeout_s: float = 10.0,
        fusion: str = "rrf",
        rrf_k: int | None = None,
        dense_weight: float = 1.0,
        sparse_weight: float = 1.0,
        cluster: ClusterLayout | None = None,
    ) -> None:
        if (url is None) == (path is None):
            raise ValueError("give exactly one of url (server) or path (local mode)")
        self._collection = collection
        self._url = url
        self._path = path
        self._api_key = api_key
        self._timeout_s = timeout_s
        self._fusion = fusion
        # RRF, Qdrant's formula: score = sum over prefetches of 1 / (rank / weight + k - 1), rank
        # from 1 (k=61 is the literature's k=60). None keeps Qdrant's default k (2).
        self._rrf_k = rrf_k
        self._weights = (dense_weight, sparse_weight)
        # Distributed-mode layout: sent to a server only (local mode has no shards).
        self._cluster = cluster if url is not None else None
        self._client: QdrantClient | None = None
        # Re-entrant: ensure_collection holds it while the client property may take it again.
        self._lock = threading.RLock()
        self._ready = False
        # A sibling (another collection on the same client) delegates its client to its owner.
        self._owner: QdrantChunkStore | None = None

    @property
    def collection(self) -> str:
        return self._collection

    def sibling(self, collection: str) -> QdrantChunkStore:
        """The same store on another collection, sharing this one's client: local mode allows
        one client per folder, and a server needs no second connection pool."""
        other = copy.copy(self)
        other._collection = collection
        other._ready = False
        other._client = None  # never closes the owner's client
        other._owner = self
        return other

    @property
    def client(self) -> QdrantClient:
        if self._owner is not None:
            return self._owner.client
        if self._client is None:
            with self._lock:
                if self._client is None:
                    from qdrant_client import QdrantClient

                    if self._url is not None:
                        self._client = _Unavailable(  # type: ignore[assignment]
                            QdrantClient(
                                url=self._url, api_key=self._api_key, timeout=int(self._timeout_s)
                            ),
                            self._url,
                        )
                    else:
                        assert self._path is not None
                        self._path.mkdir(parents=True, exist_ok=True)
                        # Local mode keeps collections in plain Python structures plus a SQLite
                        # file and is not documented as thread-safe, while the embedded default
                        # calls it from API and worker threads: serialise every call.
                        self._client = _Serialized(QdrantClient(path=str(self._path)))  # type: ignore[assignment]
        assert self._client is not None
        return self._client

    # -- schema ----------------------------------------------------------------------------
    def ensure_collection(self, dense_dim: int, sparse_idf: bool) -> None:
        from qdrant_client.http import models as qm

        if self._ready:
            return
        with self._lock:
            if self._ready:
                return
            client = self._client_or_raise()
            if not client.collection_exists(self._collection):
                client.create_collection(
                    self._collection,
                    vectors_config={
                        DENSE: qm.VectorParams(size=dense_dim, distance=qm.Distance.COSINE)
                    },
                    sparse_vectors_config={
                        SPARSE: qm.SparseVectorParams(
                            modifier=qm.Modifier.IDF if sparse_idf else None
                        )
                    },
                    **(self._cluster.create_args() if self._cluster else {}),
                )
                # Payload indexes make the tenant/document filters cheap on a server; local mode
                # has no use for them (it scans, and warns when asked), so only a server gets them.
                indexed_fields = (
                    ()
                    if self._url is None
                    else (
                        (
                            "tenant_id",
                            qm.KeywordIndexParams(type=qm.KeywordIndexType.KEYWORD, is_tenant=True),
                        ),
                        ("document_id", qm.PayloadSchemaType.KEYWORD),
                        ("filename", qm.PayloadSchemaType.KEYWORD),
                        ("groups", qm.PayloadSchemaType.KEYWORD),
                        ("kb", qm.PayloadSchemaType.KEYWORD),
                        ("scope", qm.PayloadSchemaType.KEYWORD),
                    )
                )
                for field, schema in indexed_fields:
                    client.create_payload_index(self._collection, field, field_schema=schema)
            else:
                info = client.get_collection(self._collection)
                vectors = info.config.params.vectors
                existing = vectors.get(DENSE) if isinstance(vectors, dict) else None
                if existing is not None and existing.size != dense_dim:
                    raise RuntimeError(
                        f"collection {self._collection!r} holds {existing.size}-d vectors but the "
                        f"embedder makes {dense_dim}-d ones; re-embed into a new collection "
                        "(docs/operations.md, 'changing the embedding model')"
                    )
            self._ready = True

    def create_metadata_index(self, key: str) -> None:
        from qdrant_client.http import models as qm

        if self._url is None:
            return
        self._client_or_raise().create_payload_index(
            self._collection, f"metadata.{key}", field_schema=qm.PayloadSchemaType.KEYWORD
        )

    # -- aliases and generations (zero-downtime re-index) ---------------------------------
    def point_alias(self, alias: str, collection: str) -> None:
        """Make ``alias`` name ``collection``, in one request: Qdrant applies the delete and the
        create of one update_collection_aliases call atomically, so no reader ever finds the
        alias missing or pointing at a half-built collection."""
        from qdrant_client.http import models as qm

        client = self._client_or_raise()
        client.update_collection_aliases(
            change_aliases_operations=[
                qm.DeleteAliasOperation(delete_alias=qm.DeleteAlias(alias_name=alias)),
                qm.CreateAliasOperation(
                    create_alias=qm.CreateAlias(collection_name=collection, alias_name=alias)
                ),
            ]
        )

    def alias_target(self, alias: str) -> str | None:
        """The collection ``alias`` names, or None."""
        for a in self._client_or_raise().get_aliases().aliases:
            if a.alias_name == alias:
                return str(a.collection_name)
        return None

    def drop_collection(self) -> None:
        client = self._client_or_raise()
        if client.collection_exists(self._collection):
            client.delete_collection(self._collection)
        self._ready = False

    def document_ids(self, tenant_id: str | None = None) -> set[tuple[str, str]]:
        """(tenant id, document id) of every document with chunks here: a scroll over two
        payload fields, no vectors."""
        from qdrant_client.http import models as qm

        client = self._client_or_raise()
        if not client.collection_exists(self._collection):
            return set()
        flt = (
            None
            if tenant_id is None
            else qm.Filter(
                must=[qm.FieldCondition(key="tenant_id", match=qm.MatchValue(value=tenant_id))]
            )
        )
        found: set[tuple[str, str]] = set()
        offset: Any = None
        while True:
            points, offset = client.scroll(
                self._collection,
                scroll_filter=flt,
                limit=1024,
                offset=offset,
                with_payload=["tenant_id", "document_id"],
                with_vectors=False,
            )
            for p in points:
                payload = p.payload or {}
                found.add((str(payload.get("tenant_id", "")), str(payload.get("document_id", ""))))
            if offset is None:
                return found

    # -- writes ----------------------------------------------------------------------------
    def upsert(self, records: Sequence[ChunkRecord]) -> None:
        from qdrant_client.http import models as qm

        client = self._client_or_raise()
        for start in range(0, len(records), UPSERT_BATCH):
            batch = records[start : start + UPSERT_BATCH]
            points = []
            for r in batch:
                vector: dict[str, Any] = {DENSE: r.dense}
                if r.sparse is not None and r.sparse.indices:
                    vector[SPARSE] = qm.SparseVector(
                        indices=r.sparse.indices, values=r.sparse.values
                    )
                points.append(
                    qm.PointStruct(
                        id=r.point_id,
                        vector=vector,
                        payload=chunk_payload(r),
                    )
                )
            # wait=True: the task reports "indexed" only once the points are searchable.
            client.upsert(self._collection, points=points, wait=True, **self._write_args())

    def delete_document(self, tenant_id: str, document_id: str) -> None:
        from qdrant_client.http import models as qm

        client = self._client_or_raise()
        if not client.collection_exists(self._collection):
            return
        client.delete(
            self._collection,
            points_selector=qm.FilterSelector(
                filter=self._filter(SearchFilter(tenant_id=tenant_id, document_ids=[document_id]))
            ),
            wait=True,
            **self._write_args(),
        )

    def delete_document_tail(self, tenant_id: str, document_id: str, keep: int) -> None:
        """Drop chunks with index >= keep, so a re-run that chunked differently leaves no
        stragglers."""
        from qdrant_client.http import models as qm

        client = self._client_or_raise()
        # A document's chunks always hold the indices 0..n-1 with no gap: a run upserts them in
        # ascending order, and deletes take a tail or everything. So when chunk `keep` is absent
        # there is no tail to drop. One lookup by id, instead of a filtered delete, which local
        # mode answers by testing every point of the collection in Python: that made indexing
        # N documents cost O(N²) (BENCHMARKS.md, "Ingestion throughput").
        probe = point_id_for(document_id, keep)
        if not client.retrieve(self._collection, ids=[probe], with_payload=False):
            return
        flt = self._filter(SearchFilter(tenant_id=tenant_id, document_ids=[document_id]))
        assert flt.must is not None and isinstance(flt.must, list)
        flt.must.append(qm.FieldCondition(key="chunk_index", range=qm.Range(gte=keep)))
        client.delete(
            self._collection,
            points_selector=qm.FilterSelector(filter=flt),
            wait=True,
            **self._write_args(),
        )

    # -- reads -----------------------------------------------------------------------------
    def count_document(self, tenant_id: str, document_id: str) -> int:
        client = self._client_or_raise()
        if not client.collection_exists(self._collection):
            return 0
        flt = self._filter(SearchFilter(tenant_id=tenant_id, document_ids=[document_id]))
        return int(client.count(self._collection, count_filter=flt, exact=True).count)

    def count_all(self) -> int:
        client = self._client_or_raise()
        if not client.collection_exists(self._collection):
            return 0
        return int(client.count(self._collection, exact=True).count)

    def hybrid_search(
        self,
        dense: list[float],
        sparse: SparseVector | None,
        flt: SearchFilter,
        limit: int,
        prefetch_limit: int,
        context: Sequence[ContextQuery] = (),
    ) -> list[ScoredChunk]:
        from qdrant_client.http import models as qm

        if not self._collection_exists():
            return []
        qfilter = self._filter(flt)
        prefetch = []
        weights: list[float] = []
        for query in fusion_queries(dense, sparse, context, self._fusion):
            d_vec, s_vec, weight = query.dense, query.sparse, query.weight
            prefetch.append(
                qm.Prefetch(query=d_vec, using=DENSE, limit=prefetch_limit, filter=qfilter)
            )
            weights.append(self._weights[0] * weight)
            if s_vec is not None and s_vec.indices:
                prefetch.append(
                    qm.Prefetch(
                        query=qm.SparseVector(indices=s_vec.indices, values=s_vec.values),
                        using=SPARSE,
                        limit=prefetch_limit,
                        filter=qfilter,
                    )
                )
                weights.append(self._weights[1] * weight)
        response = self._client_or_raise().query_points(
            self._collection,
            prefetch=prefetch,
            query=self._fusion_query(weights),
            query_filter=qfilter,
            limit=limit,
            with_payload=True,
            with_vectors=[DENSE],
            **self._read_args(),
        )
        return [scored_chunk(p, query_dense=dense) for p in response.points]

    def _fusion_query(self, weights: list[float]) -> qm.FusionQuery | qm.RrfQuery:
        """DBSF, or RRF with the configured k and the prefetches' weights (per query: dense,
        then sparse).

        Weights are sent only when they are not all 1.0, and k only when set, so the plain
        configuration stays a request every Qdrant version with the Query API accepts.
        """
        from qdrant_client.http import models as qm

        if self._fusion == "dbsf":
            return qm.FusionQuery(fusion=qm.Fusion.DBSF)
        if self._rrf_k is None and all(w == 1.0 for w in weights):
            return qm.FusionQuery(fusion=qm.Fusion.RRF)
        return qm.RrfQuery(
            rrf=qm.Rrf(
                k=self._rrf_k,
                weights=None if all(w == 1.0 for w in weights) else weights,
            )
        )

    def dense_search(self, dense: list[float], flt: SearchFilter, limit: int) -> list[ScoredChunk]:
        if not self._collection_exists():
            return []
        response = self._client_or_raise().query_points(
            self._collection,
            query=dense,
            using=DENSE,
            query_filter=self._filter(flt),
            limit=limit,
            with_payload=True,
            **self._read_args(),
        )
        return [scored_chunk(p, dense_score=float(p.score)) for p in response.points]

    def sparse_search(
        self, sparse: SparseVector, flt: SearchFilter, limit: int
    ) -> list[ScoredChunk]:
        from qdrant_client.http import models as qm

        if not self._collection_exists() or not sparse.indices:
            return []
        response = self._client_or_raise().query_points(
            self._collection,
            query=qm.SparseVector(indices=sparse.indices, values=sparse.values),
            using=SPARSE,
            query_filter=self._filter(flt),
            limit=limit,
            with_payload=True,
            **self._read_args(),
        )
        return [scored_chunk(p) for p in response.points]

    def ping(self) -> bool:
        try:
            self.client.get_collections()
            return True
        except Exception:
            return False

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
                self._ready = False

    # -- helpers ---------------------------------------------------------------------------
    def _write_args(self) -> dict[str, Any]:
        return self._cluster.write_args() if self._cluster else {}

    def _read_args(self) -> dict[str, Any]:
        return self._cluster.read_args() if self._cluster else {}

    def _collection_exists(self) -> bool:
        return bool(self._client_or_raise().collection_exists(self._collection))

    def _client_or_raise(self) -> QdrantClient:
        try:
            return self.client
        except StoreUnavailable:
            raise
        except Exception as exc:  # connection refused, lock held by another process, ...
            raise StoreUnavailable(f"vector store unavailable: {exc}", where=self._url) from exc

    @staticmethod
    def _filter(flt: SearchFilter) -> qm.Filter:
        from qdrant_client.http import models as qm

        # A search names a knowledge base: one condition on its tenant-qualified scope, not two
        # (tenant, then kb). Local mode evaluates every condition on every point in Python, so
        # each one costs a full scan (bench/profile_local_search.py).
        must: list[Any] = [
            qm.FieldCondition(key="tenant_id", match=qm.MatchValue(value=flt.tenant_id))
            if flt.kb is None
            else qm.FieldCondition(
                key="scope", match=qm.MatchValue(value=scope_of(flt.tenant_id, flt.kb))
            )
        ]
        if flt.document_ids is not None:
            must.append(
                qm.FieldCondition(key="document_id", match=qm.MatchAny(any=list(flt.document_ids)))
            )
        if flt.filenames is not None:
            must.append(
                qm.FieldCondition(key="filename", match=qm.MatchAny(any=list(flt.filenames)))
            )
        for key, value in (flt.metadata or {}).items():
            match: Any = (
                qm.MatchAny(any=list(value))
                if isinstance(value, list)
                else qm.MatchValue(value=value)
            )
            must.append(qm.FieldCondition(key=f"metadata.{key}", match=match))
        for key, (gte, lte) in (flt.date_ranges or {}).items():
            must.append(
                qm.FieldCondition(
                    key=f"metadata.{key}",
                    range=qm.DatetimeRange(gte=_datetime(gte), lte=_datetime(lte)),
                )
            )
        if flt.groups is not None:
            must.append(
                qm.FieldCondition(key="groups", match=qm.MatchAny(any=[PUBLIC_GROUP, *flt.groups]))
            )
        return qm.Filter(must=must)
