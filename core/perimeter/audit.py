"""The audit log: an append-only table of who did what to which documents, and which chunks a
query served.

Who: tenant + actor (``key:<key id>``, ``oidc:<subject>``, ``cli:<os user>`` or ``anonymous``).
What: ``upload``, ``delete``, ``reindex``, ``query``, and the admin actions of the CLI. Which:
document ids and the Qdrant point ids served. The question text is stored (it is the tenant's
own data, inside the perimeter); credentials never are: nothing here ever sees a request
header.

Entries are group-committed (perimeter.coalescing): the entries of concurrent requests that
arrive while one transaction commits go together into the next one, so 32 questions at once cost
a few commits, not 32 serialised ones behind SQLite's single writer. Each caller still returns
only after its own entry is committed, and sees the error when that commit fails.

Append-only is enforced twice: this module has no update or delete, and the database refuses
them with a trigger (SQLite and PostgreSQL), so a bug elsewhere cannot rewrite history either.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from perimeter.backends.sql_metadata import SqlMetadataStore, metadata_obj
from perimeter.coalescing import Coalescer

if TYPE_CHECKING:
    from perimeter.auth.principal import Principal

MAX_IDS = 1000
MAX_LIST = 1000
MAX_ENTRIES_PER_COMMIT = 256

audit_log = sa.Table(
    "audit_log",
    metadata_obj,
    sa.Column(
        "id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
        autoincrement=True,
    ),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("tenant_id", sa.String(128), nullable=False),
    sa.Column("actor", sa.String(255), nullable=False),
    sa.Column("auth_method", sa.String(16), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("document_ids", sa.JSON, nullable=False),
    sa.Column("point_ids", sa.JSON, nullable=False),
    sa.Column("details", sa.JSON, nullable=False),
)  # fmt: skip
sa.Index("ix_audit_tenant_id", audit_log.c.tenant_id, audit_log.c.id)

_APPEND_ONLY = "audit_log is append-only"
sa.event.listen(
    audit_log,
    "after_create",
    sa.DDL(
        f"CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log "
        f"BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY}'); END"
    ).execute_if(dialect="sqlite"),
)
sa.event.listen(
    audit_log,
    "after_create",
    sa.DDL(
        f"CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log "
        f"BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY}'); END"
    ).execute_if(dialect="sqlite"),
)
sa.event.listen(
    audit_log,
    "after_create",
    sa.DDL(
        "CREATE OR REPLACE FUNCTION perimeter_audit_append_only() RETURNS trigger AS $$ "
        f"BEGIN RAISE EXCEPTION '{_APPEND_ONLY}'; END; $$ LANGUAGE plpgsql"
    ).execute_if(dialect="postgresql"),
)
sa.event.listen(
    audit_log,
    "after_create",
    sa.DDL(
        "CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_log "
        "FOR EACH STATEMENT EXECUTE FUNCTION perimeter_audit_append_only()"
    ).execute_if(dialect="postgresql"),
)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: datetime
    tenant_id: str
    actor: str
    auth_method: str
    action: str
    document_ids: list[str]
    point_ids: list[str]
    details: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "tenant_id": self.tenant_id,
            "actor": self.actor,
            "auth_method": self.auth_method,
            "action": self.action,
            "document_ids": self.document_ids,
            "point_ids": self.point_ids,
            "details": self.details,
        }


class AuditLog:
    def __init__(self, metadata: SqlMetadataStore) -> None:
        self._metadata = metadata
        self._commits: Coalescer[dict[str, Any], None] = Coalescer(
            self._insert, MAX_ENTRIES_PER_COMMIT
        )

    @property
    def commits(self) -> Coalescer[dict[str, Any], None]:
        """The group-commit queue (tests and metrics read how many entries wait)."""
        return self._commits

    def _insert(self, rows: list[dict[str, Any]]) -> list[None]:
        with self._metadata.engine.begin() as conn:
            conn.execute(audit_log.insert(), rows)
        return [None] * len(rows)

    def record(
        self,
        *,
        tenant_id: str,
        actor: str,
        auth_method: str,
        action: str,
        document_ids: Sequence[str] = (),
        point_ids: Sequence[str] = (),
        details: dict[str, Any] | None = None,
    ) -> None:
        """Append one entry. Raises on failure: an action that cannot be audited should not
        look as if it had been (the API turns the error into a 500 with a request id)."""
        self._commits.submit(
            [
                {
                    "at": datetime.now(UTC),
                    "tenant_id": tenant_id,
                    "actor": actor[:255],
                    "auth_method": auth_method[:16],
                    "action": action[:32],
                    "document_ids": list(dict.fromkeys(document_ids))[:MAX_IDS],
                    "point_ids": list(dict.fromkeys(point_ids))[:MAX_IDS],
                    "details": details or {},
                }
            ]
        )

    def record_for(
        self,
        principal: Principal,
        action: str,
        *,
        document_ids: Sequence[str] = (),
        point_ids: Sequence[str] = (),
        details: dict[str, Any] | None = None,
    ) -> None:
        self.record(
            tenant_id=principal.tenant_id,
            actor=principal.actor,
            auth_method=principal.auth_method,
            action=action,
            document_ids=document_ids,
            point_ids=point_ids,
            details=details,
        )

    def entries(
        self,
        tenant_id: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after_id: int | None = None,
        limit: int = 100,
    ) -> list[AuditEntry]:
        """Newest first, or oldest first after ``after_id`` (for following the log)."""
        query = sa.select(audit_log)
        if tenant_id is not None:
            query = query.where(audit_log.c.tenant_id == tenant_id)
        if action is not None:
            query = query.where(audit_log.c.action == action)
        # Compared in UTC: SQLite keeps the timestamps without their offset.
        if since is not None:
            query = query.where(audit_log.c.at >= _utc(since))
        if until is not None:
            query = query.where(audit_log.c.at <= _utc(until))
        if after_id is not None:
            query = query.where(audit_log.c.id > after_id).order_by(audit_log.c.id.asc())
        else:
            query = query.order_by(audit_log.c.id.desc())
        query = query.limit(max(1, min(limit, MAX_LIST)))
        with self._metadata.engine.connect() as conn:
            return [_entry(r) for r in conn.execute(query).mappings()]


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def _entry(row: Any) -> AuditEntry:
    at: datetime = row["at"]
    return AuditEntry(
        id=int(row["id"]),
        at=at if at.tzinfo else at.replace(tzinfo=UTC),
        tenant_id=row["tenant_id"],
        actor=row["actor"],
        auth_method=row["auth_method"],
        action=row["action"],
        document_ids=list(row["document_ids"] or []),
        point_ids=list(row["point_ids"] or []),
        details=dict(row["details"] or {}),
    )


def record_query(
    audit: AuditLog,
    principal: Principal,
    question: str,
    served: Sequence[Any],
    details: dict[str, Any] | None = None,
) -> None:
    """One ``query`` entry: the question and exactly the chunks served (shown as sources and
    given to the LLM). ``served`` holds ScoredChunk-like objects (point_id, document_id)."""
    audit.record_for(
        principal,
        "query",
        document_ids=[c.document_id for c in served],
        point_ids=[c.point_id for c in served],
        details={"question": question, **(details or {})},
    )
