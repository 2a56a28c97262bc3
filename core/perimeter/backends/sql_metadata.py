"""Document and job metadata in SQL: SQLite for the embedded default, PostgreSQL in production.

The metadata row is the source of truth for a document's life: it is written before the task is
enqueued, and a recovery sweep re-enqueues anything stuck, so a lost broker message never loses a
document.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from perimeter.backends.errors import KnowledgeBaseExists
from perimeter.domain import (
    DEFAULT_KB,
    DocumentRecord,
    DocumentStatus,
    JobRecord,
    JobStatus,
    KnowledgeBase,
)

metadata_obj = sa.MetaData()

documents = sa.Table(
    "documents",
    metadata_obj,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("tenant_id", sa.String(128), nullable=False),
    sa.Column("content_hash", sa.String(64), nullable=False),
    sa.Column("filename", sa.String(255), nullable=False),
    sa.Column("content_type", sa.String(128), nullable=False),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("chunk_count", sa.Integer, nullable=False, default=0),
    sa.Column("pages", sa.Integer, nullable=True),
    sa.Column("metadata", sa.JSON, nullable=False),
    sa.Column("groups", sa.JSON, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    # The knowledge base. The id is derived from (tenant, knowledge base, content hash), so the
    # primary key alone makes "same bytes, same tenant, same knowledge base" one document.
    sa.Column("kb", sa.String(64), nullable=False, server_default=DEFAULT_KB),
    # Pages read by OCR (a JSON list of 1-based numbers) and their mean confidence; NULL on rows
    # written before OCR was recorded, read back as "no page OCR'd".
    sa.Column("ocr_pages", sa.JSON, nullable=True),
    sa.Column("ocr_confidence", sa.Float, nullable=True),
)

# Nullable columns added to ``documents`` after its first release: ``_upgrade`` adds the missing
# ones to an older database, in this order.
_ADDED_DOCUMENT_COLUMNS = ("ocr_pages", "ocr_confidence")

knowledge_bases = sa.Table(
    "knowledge_bases",
    metadata_obj,
    sa.Column("tenant_id", sa.String(128), primary_key=True),
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("description", sa.Text, nullable=False, default=""),
    sa.Column("embedding_profile", sa.String(64), nullable=False),
    sa.Column("chunk_max_tokens", sa.Integer, nullable=True),
    sa.Column("chunk_overlap_tokens", sa.Integer, nullable=True),
    sa.Column("llm_model", sa.String(255), nullable=True),
    sa.Column("sensitivity", sa.String(64), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("unsupported_policy", sa.String(16), nullable=True),
)

jobs = sa.Table(
    "jobs",
    metadata_obj,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("document_id", sa.String(64), nullable=False, index=True),
    sa.Column("tenant_id", sa.String(128), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("progress", sa.Float, nullable=False, default=0.0),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

sa.Index("ix_documents_tenant_status", documents.c.tenant_id, documents.c.status)
sa.Index("ix_documents_tenant_kb", documents.c.tenant_id, documents.c.kb)


def _insert_queued_job(
    conn: Connection, job_id: str, document_id: str, tenant_id: str, now: datetime
) -> None:
    """A new job in the queued state (an upload's first job, or a re-run's)."""
    conn.execute(
        jobs.insert().values(
            id=job_id,
            document_id=document_id,
            tenant_id=tenant_id,
            status=JobStatus.QUEUED.value,
            error=None,
            progress=0.0,
            created_at=now,
            updated_at=now,
        )
    )


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes even for timezone=True columns.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class SqlMetadataStore:
    def __init__(self, url: str) -> None:
        self._url = url
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            kwargs: dict[str, Any] = {"future": True, "pool_pre_ping": True}
            if self._url.startswith("sqlite"):
                db_path = self._url.split("///", 1)[-1]
                if db_path and db_path != ":memory:":
                    Path(db_path).parent.mkdir(parents=True, exist_ok=True)
                # One SQLite file is shared by the API and the worker threads of `perimeter up`.
                kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            self._engine = sa.create_engine(self._url, **kwargs)
            if self._url.startswith("sqlite"):
                sa.event.listen(self._engine, "connect", _sqlite_pragmas)
        return self._engine

    def create_schema(self) -> None:
        metadata_obj.create_all(self.engine)
        self._upgrade()

    def _upgrade(self) -> None:
        """Bring a database made by an earlier version up to this schema (additive only)."""
        inspector = sa.inspect(self.engine)
        kb_columns = {c["name"] for c in inspector.get_columns("knowledge_bases")}
        if "unsupported_policy" not in kb_columns:
            with self._tx() as conn:
                conn.execute(
                    sa.text("ALTER TABLE knowledge_bases ADD COLUMN unsupported_policy VARCHAR(16)")
                )
        columns = {c["name"] for c in inspector.get_columns("documents")}
        missing = [name for name in _ADDED_DOCUMENT_COLUMNS if name not in columns]
        if missing:
            dialect = self.engine.dialect
            with self._tx() as conn:
                for name in missing:
                    # Nullable, no default: the statement is instant on PostgreSQL (no table
                    # rewrite), and old rows read as "nothing OCR'd".
                    kind = documents.c[name].type.compile(dialect=dialect)
                    conn.execute(sa.text(f"ALTER TABLE documents ADD COLUMN {name} {kind}"))
        if "kb" in columns:
            return
        with self._tx() as conn:
            conn.execute(
                sa.text(
                    "ALTER TABLE documents ADD COLUMN kb VARCHAR(64) NOT NULL "
                    f"DEFAULT '{DEFAULT_KB}'"
                )
            )
            if self.engine.dialect.name == "postgresql":
                # Uniqueness now comes from the id, which includes the knowledge base. (SQLite
                # cannot drop a table constraint in place; an old SQLite file keeps one copy of
                # a file per tenant across knowledge bases.)
                conn.execute(
                    sa.text(
                        "ALTER TABLE documents DROP CONSTRAINT IF EXISTS uq_documents_tenant_hash"
                    )
                )

    def ping(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            return True
        except Exception:
            return False

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def _first(self, query: Any) -> Any:
        """The first row of ``query`` as a mapping, or None."""
        with self.engine.connect() as conn:
            return conn.execute(query).mappings().first()

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    # -- documents -------------------------------------------------------------------------
    def create_document_with_job(
        self,
        *,
        document_id: str,
        tenant_id: str,
        content_hash: str,
        filename: str,
        content_type: str,
        size_bytes: int,
        metadata: dict[str, Any],
        groups: list[str],
        kb: str = DEFAULT_KB,
    ) -> tuple[DocumentRecord, JobRecord, bool]:
        """Insert the document and its first job in one transaction.

        Returns (document, job, created). Same content for the same tenant → the existing
        document and its latest job, created=False.
        """
        now = _now()
        job_id = uuid.uuid4().hex
        try:
            with self._tx() as conn:
                conn.execute(
                    documents.insert().values(
                        id=document_id,
                        tenant_id=tenant_id,
                        content_hash=content_hash,
                        filename=filename,
                        content_type=content_type,
                        size_bytes=size_bytes,
                        status=DocumentStatus.QUEUED.value,
                        error=None,
                        chunk_count=0,
                        pages=None,
                        metadata=metadata,
                        groups=groups,
                        kb=kb,
                        attempts=0,
                        created_at=now,
                        updated_at=now,
                    )
                )
                _insert_queued_job(conn, job_id, document_id, tenant_id, now)
        except sa.exc.IntegrityError:
            existing = self.get_document(tenant_id, document_id)
            if existing is None:  # a concurrent delete won the race; let the caller retry
                raise
            job = self.latest_job(document_id)
            assert job is not None
            return existing, job, False
        doc = self.get_document(tenant_id, document_id)
        job = self.get_job(tenant_id, job_id)
        assert doc is not None and job is not None
        return doc, job, True

    def get_document(self, tenant_id: str, document_id: str) -> DocumentRecord | None:
        row = self._first(
            sa.select(documents).where(
                documents.c.id == document_id, documents.c.tenant_id == tenant_id
            )
        )
        return _doc(row) if row else None

    def get_document_any_tenant(self, document_id: str) -> DocumentRecord | None:
        """For the worker, which is handed a document id by the queue."""
        row = self._first(sa.select(documents).where(documents.c.id == document_id))
        return _doc(row) if row else None

    def list_documents(
        self,
        tenant_id: str,
        status: DocumentStatus | None = None,
        limit: int = 100,
        offset: int = 0,
        kb: str | None = None,
    ) -> list[DocumentRecord]:
        query = sa.select(documents).where(documents.c.tenant_id == tenant_id)
        if kb is not None:
            query = query.where(documents.c.kb == kb)
        if status is not None:
            query = query.where(documents.c.status == status.value)
        query = (
            query.order_by(documents.c.created_at.desc(), documents.c.id)
            .limit(limit)
            .offset(offset)
        )
        with self.engine.connect() as conn:
            return [_doc(r) for r in conn.execute(query).mappings()]

    def count_by_status(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(documents.c.status, sa.func.count()).group_by(documents.c.status)
            ).all()
        return {str(s): int(n) for s, n in rows}

    def set_status(
        self,
        document_id: str,
        status: DocumentStatus,
        *,
        error: str | None = None,
        chunk_count: int | None = None,
        pages: int | None = None,
        progress: float | None = None,
        ocr_pages: Sequence[int] | None = None,
        ocr_confidence: float | None = None,
    ) -> bool:
        """Move a document (and its open job) along. False if the document is gone.
        ``ocr_pages`` given (also empty) replaces the document's OCR record together with
        ``ocr_confidence``: a re-parse that OCR'd nothing clears an earlier one."""
        now = _now()
        values: dict[str, Any] = {"status": status.value, "updated_at": now, "error": error}
        if chunk_count is not None:
            values["chunk_count"] = chunk_count
        if pages is not None:
            values["pages"] = pages
        if ocr_pages is not None:
            values["ocr_pages"] = list(ocr_pages)
            values["ocr_confidence"] = ocr_confidence
        job_status = {
            DocumentStatus.QUEUED: JobStatus.QUEUED,
            DocumentStatus.INDEXED: JobStatus.SUCCEEDED,
            DocumentStatus.FAILED: JobStatus.FAILED,
        }.get(status, JobStatus.RUNNING)
        job_values: dict[str, Any] = {"status": job_status.value, "updated_at": now, "error": error}
        if progress is not None:
            job_values["progress"] = progress
        elif status is DocumentStatus.INDEXED:
            job_values["progress"] = 1.0
        with self._tx() as conn:
            updated = conn.execute(
                documents.update().where(documents.c.id == document_id).values(**values)
            ).rowcount
            if updated:
                latest = conn.execute(
                    sa.select(jobs.c.id)
                    .where(jobs.c.document_id == document_id)
                    .order_by(jobs.c.created_at.desc())
                    .limit(1)
                ).scalar()
                if latest:
                    conn.execute(jobs.update().where(jobs.c.id == latest).values(**job_values))
        return bool(updated)

    def record_attempt(self, document_id: str) -> int:
        """Count a task start outside the broker, so a poison file cannot loop forever."""
        with self._tx() as conn:
            conn.execute(
                documents.update()
                .where(documents.c.id == document_id)
                .values(attempts=documents.c.attempts + 1, updated_at=_now())
            )
            value = conn.execute(
                sa.select(documents.c.attempts).where(documents.c.id == document_id)
            ).scalar()
        return int(value or 0)

    def new_job(self, tenant_id: str, document_id: str, reset_attempts: bool = True) -> JobRecord:
        now = _now()
        job_id = uuid.uuid4().hex
        with self._tx() as conn:
            _insert_queued_job(conn, job_id, document_id, tenant_id, now)
            values: dict[str, Any] = {
                "status": DocumentStatus.QUEUED.value,
                "error": None,
                "updated_at": now,
            }
            if reset_attempts:
                values["attempts"] = 0
            conn.execute(documents.update().where(documents.c.id == document_id).values(**values))
        job = self.get_job(tenant_id, job_id)
        assert job is not None
        return job

    def delete_document(self, tenant_id: str, document_id: str) -> bool:
        with self._tx() as conn:
            conn.execute(
                jobs.delete().where(
                    jobs.c.document_id == document_id, jobs.c.tenant_id == tenant_id
                )
            )
            deleted = conn.execute(
                documents.delete().where(
                    documents.c.id == document_id, documents.c.tenant_id == tenant_id
                )
            ).rowcount
        return bool(deleted)

    def hash_in_use(self, content_hash: str) -> bool:
        with self.engine.connect() as conn:
            return (
                conn.execute(
                    sa.select(sa.func.count()).where(documents.c.content_hash == content_hash)
                ).scalar()
                or 0
            ) > 0

    def stale_documents(self, older_than: timedelta) -> list[DocumentRecord]:
        """Documents not finished and not touched for a while: their task message was lost."""
        cutoff = _now() - older_than
        unfinished = [
            DocumentStatus.QUEUED.value,
            DocumentStatus.PARSING.value,
            DocumentStatus.EMBEDDING.value,
        ]
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(documents).where(
                    documents.c.status.in_(unfinished), documents.c.updated_at < cutoff
                )
            ).mappings()
            return [_doc(r) for r in rows]

    # -- knowledge bases -------------------------------------------------------------------
    def create_kb(self, kb: KnowledgeBase) -> KnowledgeBase:
        """Raises KnowledgeBaseExists when the tenant already has one by that name."""
        try:
            with self._tx() as conn:
                conn.execute(
                    knowledge_bases.insert().values(
                        tenant_id=kb.tenant_id,
                        name=kb.name,
                        description=kb.description,
                        embedding_profile=kb.embedding_profile,
                        chunk_max_tokens=kb.chunk_max_tokens,
                        chunk_overlap_tokens=kb.chunk_overlap_tokens,
                        llm_model=kb.llm_model,
                        sensitivity=kb.sensitivity,
                        created_at=_now(),
                        unsupported_policy=kb.unsupported_policy,
                    )
                )
        except sa.exc.IntegrityError as exc:
            raise KnowledgeBaseExists(kb.name) from exc
        created = self.get_kb(kb.tenant_id, kb.name)
        assert created is not None
        return created

    def get_kb(self, tenant_id: str, name: str) -> KnowledgeBase | None:
        row = self._first(
            sa.select(knowledge_bases).where(
                knowledge_bases.c.tenant_id == tenant_id, knowledge_bases.c.name == name
            )
        )
        return _kb(row) if row else None

    def list_kbs(self, tenant_id: str) -> list[KnowledgeBase]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(knowledge_bases)
                .where(knowledge_bases.c.tenant_id == tenant_id)
                .order_by(knowledge_bases.c.name)
            ).mappings()
            return [_kb(r) for r in rows]

    def count_kbs(self, tenant_id: str) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count()).where(knowledge_bases.c.tenant_id == tenant_id)
                ).scalar()
                or 0
            )

    def delete_kb(self, tenant_id: str, name: str) -> bool:
        with self._tx() as conn:
            deleted = conn.execute(
                knowledge_bases.delete().where(
                    knowledge_bases.c.tenant_id == tenant_id, knowledge_bases.c.name == name
                )
            ).rowcount
        return bool(deleted)

    def kb_document_counts(self, tenant_id: str) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(documents.c.kb, sa.func.count())
                .where(documents.c.tenant_id == tenant_id)
                .group_by(documents.c.kb)
            ).all()
        return {str(k): int(n) for k, n in rows}

    def document_ids_in_kb(self, tenant_id: str, name: str) -> list[str]:
        with self.engine.connect() as conn:
            return [
                str(r)
                for r in conn.execute(
                    sa.select(documents.c.id).where(
                        documents.c.tenant_id == tenant_id, documents.c.kb == name
                    )
                ).scalars()
            ]

    # -- jobs ------------------------------------------------------------------------------
    def get_job(self, tenant_id: str, job_id: str) -> JobRecord | None:
        row = self._first(sa.select(jobs).where(jobs.c.id == job_id, jobs.c.tenant_id == tenant_id))
        return _job(row) if row else None

    def latest_job(self, document_id: str) -> JobRecord | None:
        row = self._first(
            sa.select(jobs)
            .where(jobs.c.document_id == document_id)
            .order_by(jobs.c.created_at.desc())
            .limit(1)
        )
        return _job(row) if row else None

    def set_job_progress(self, document_id: str, progress: float) -> None:
        with self._tx() as conn:
            latest = conn.execute(
                sa.select(jobs.c.id)
                .where(jobs.c.document_id == document_id)
                .order_by(jobs.c.created_at.desc())
                .limit(1)
            ).scalar()
            if latest:
                conn.execute(
                    jobs.update()
                    .where(jobs.c.id == latest)
                    .values(progress=progress, updated_at=_now())
                )


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    # WAL lets the API read while a worker thread writes; synchronous=NORMAL is durable in WAL.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _doc(row: Any) -> DocumentRecord:
    return DocumentRecord(
        id=row["id"],
        tenant_id=row["tenant_id"],
        content_hash=row["content_hash"],
        filename=row["filename"],
        content_type=row["content_type"],
        size_bytes=int(row["size_bytes"]),
        status=DocumentStatus(row["status"]),
        error=row["error"],
        chunk_count=int(row["chunk_count"] or 0),
        pages=row["pages"],
        metadata=dict(row["metadata"] or {}),
        attempts=int(row["attempts"] or 0),
        created_at=_aware(row["created_at"]),
        updated_at=_aware(row["updated_at"]),
        groups=list(row["groups"] or []),
        kb=row["kb"] or DEFAULT_KB,
        ocr_pages=[int(n) for n in row["ocr_pages"] or []],
        ocr_confidence=row["ocr_confidence"],
    )


def _kb(row: Any) -> KnowledgeBase:
    return KnowledgeBase(
        tenant_id=row["tenant_id"],
        name=row["name"],
        description=row["description"] or "",
        embedding_profile=row["embedding_profile"],
        chunk_max_tokens=row["chunk_max_tokens"],
        chunk_overlap_tokens=row["chunk_overlap_tokens"],
        llm_model=row["llm_model"],
        sensitivity=row["sensitivity"],
        created_at=_aware(row["created_at"]),
        unsupported_policy=row["unsupported_policy"],
    )


def _job(row: Any) -> JobRecord:
    return JobRecord(
        id=row["id"],
        document_id=row["document_id"],
        tenant_id=row["tenant_id"],
        status=JobStatus(row["status"]),
        error=row["error"],
        progress=float(row["progress"] or 0.0),
        created_at=_aware(row["created_at"]),
        updated_at=_aware(row["updated_at"]),
    )
