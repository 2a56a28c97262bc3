"""What both Qdrant adapters (server/local mode and Edge) store and read back, in one place.

The two adapters speak different client libraries, but a point must look the same in either
engine: a collection migrated from local mode to Edge, or compared between them in the contract
suite, holds the same named vectors and the same payload. Importing this module loads neither
client library.
"""

from __future__ import annotations

from typing import Any

from perimeter.domain import ChunkRecord, ScoredChunk

DENSE = "dense"
SPARSE = "sparse"
# Documents open to every member of their tenant carry this group; a caller's group filter is
# always "public OR one of my groups", so restricting a document never needs a schema change.
PUBLIC_GROUP = "__public__"
UPSERT_BATCH = 256


def scope_of(tenant_id: str, kb: str) -> str:
    # Neither tenant ids nor knowledge base names may contain "/", so the pair is unambiguous.
    return f"{tenant_id}/{kb}"


def chunk_payload(r: ChunkRecord) -> dict[str, Any]:
    """The payload of one chunk point."""
    return {
        "tenant_id": r.tenant_id,
        "document_id": r.document_id,
        "chunk_index": r.chunk_index,
        "text": r.text,
        "filename": r.filename,
        "page": r.page,
        "section": r.section,
        "metadata": r.metadata,
        "groups": r.groups or [PUBLIC_GROUP],
        "kb": r.kb,
        "scope": scope_of(r.tenant_id, r.kb),
        # None for a text layer; points written before this field existed read back as None.
        "ocr_confidence": r.ocr_confidence,
    }


def scored_chunk(
    point: Any, query_dense: list[float] | None = None, dense_score: float | None = None
) -> ScoredChunk:
    """A search hit of either client (``id``, ``score``, ``payload``, ``vector``) as ours."""
    payload = point.payload or {}
    if dense_score is None and query_dense is not None and isinstance(point.vector, dict):
        vec = point.vector.get(DENSE)
        if vec is not None:
            # Both sides are unit-normalised, so the dot product is the cosine similarity.
            dense_score = float(sum(a * b for a, b in zip(query_dense, vec, strict=False)))
    return ScoredChunk(
        point_id=str(point.id),
        document_id=payload.get("document_id", ""),
        chunk_index=int(payload.get("chunk_index", 0)),
        text=payload.get("text", ""),
        filename=payload.get("filename", ""),
        page=payload.get("page"),
        section=payload.get("section"),
        score=float(point.score),
        dense_score=dense_score,
        metadata=payload.get("metadata") or {},
        ocr_confidence=payload.get("ocr_confidence"),
    )
