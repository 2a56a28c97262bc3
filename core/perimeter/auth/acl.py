"""Per-document ACL on the SQL side: listings that only return what the caller may read.

Rows keep their groups as a JSON list (``[]`` = every member of the tenant). The filter matches
the JSON text: ``'[]'`` or a quoted group name inside it. That is exact because group names can
contain neither quotes nor backslashes (:func:`perimeter.auth.principal.valid_group`), so a
quoted name can only appear as a whole list element; it works the same on SQLite and
PostgreSQL, and keeps LIMIT/OFFSET paging correct. Every row is re-checked in Python as well.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import sqlalchemy as sa

from perimeter.auth.principal import can_read
from perimeter.backends.sql_metadata import SqlMetadataStore, documents
from perimeter.domain import DocumentRecord, DocumentStatus


def _like_literal(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _visible_clause(groups: Sequence[str]) -> sa.ColumnElement[bool]:
    as_text = sa.cast(documents.c.groups, sa.Text)
    conditions: list[sa.ColumnElement[bool]] = [as_text == "[]"]
    for group in groups:
        # json.dumps spells the name exactly as the stored JSON does (\\uXXXX for non-ASCII).
        pattern = f"%{_like_literal(json.dumps(group))}%"
        conditions.append(as_text.like(pattern, escape="\\"))
    return sa.or_(*conditions)


def list_visible_documents(
    metadata: SqlMetadataStore,
    tenant_id: str,
    groups: Sequence[str] | None,
    status: DocumentStatus | None = None,
    limit: int = 100,
    offset: int = 0,
    kb: str | None = None,
) -> list[DocumentRecord]:
    """``SqlMetadataStore.list_documents`` narrowed to what a caller with ``groups`` may read
    (``None``: no restriction)."""
    if groups is None:
        return metadata.list_documents(tenant_id, status, limit, offset, kb)
    from perimeter.backends.sql_metadata import _doc

    query = sa.select(documents).where(documents.c.tenant_id == tenant_id, _visible_clause(groups))
    if status is not None:
        query = query.where(documents.c.status == status.value)
    if kb is not None:
        query = query.where(documents.c.kb == kb)
    query = (
        query.order_by(documents.c.created_at.desc(), documents.c.id).limit(limit).offset(offset)
    )
    with metadata.engine.connect() as conn:
        rows = [_doc(r) for r in conn.execute(query).mappings()]
    return [d for d in rows if can_read(groups, d.groups)]


def visible_document_counts(
    metadata: SqlMetadataStore, tenant_id: str, groups: Sequence[str] | None
) -> dict[str, int]:
    """Documents per knowledge base that a caller with ``groups`` may read (``None``: all).
    A collection's count must not reveal how many documents other groups keep in it."""
    query = sa.select(documents.c.kb, sa.func.count()).where(documents.c.tenant_id == tenant_id)
    if groups is not None:
        query = query.where(_visible_clause(groups))
    with metadata.engine.connect() as conn:
        rows = conn.execute(query.group_by(documents.c.kb)).all()
    return {str(k): int(n) for k, n in rows}
