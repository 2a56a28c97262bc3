"""Re-index bookkeeping in the metadata DB: which physical collection serves each embedding
profile (the alias table), the re-index jobs, and the documents each job has written.

The alias table is what makes a switch atomic for Perimeter's own processes on every vector
store: one row names the collection *and* the embedding model that reads it, changed in one
transaction together with the job's state, so no question is ever embedded by one model and
searched in a collection made by another. On a Qdrant server (and in qdrant-client local mode)
the re-index also moves a real Qdrant collection alias, for anything that reads Qdrant directly.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from perimeter.backends.sql_metadata import SqlMetadataStore, documents, knowledge_bases
from perimeter.domain import DEFAULT_KB, DocumentRecord, DocumentStatus

# Our own MetaData: the tables are created by create_schema below, next to (not inside) the
# documents schema, and only where re-indexing is used.
reindex_metadata = sa.MetaData()

serving = sa.Table(
    "collection_serving",
    reindex_metadata,
    # The logical name: an embedding profile ("default", or a kb.embedding_profiles key).
    sa.Column("profile", sa.String(64), primary_key=True),
    sa.Column("collection", sa.String(255), nullable=False),
    # The configured embedding profile whose model made (and reads) that collection.
    sa.Column("embedding", sa.String(64), nullable=False),
    sa.Column("chunk_max_tokens", sa.Integer, nullable=True),
    sa.Column("chunk_overlap_tokens", sa.Integer, nullable=True),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

reindex_jobs = sa.Table(
    "reindex_jobs",
    reindex_metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("profile", sa.String(64), nullable=False, index=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("source_collection", sa.String(255), nullable=False),
    sa.Column("source_embedding", sa.String(64), nullable=False),
    sa.Column("source_chunk_max_tokens", sa.Integer, nullable=True),
    sa.Column("source_chunk_overlap_tokens", sa.Integer, nullable=True),
    sa.Column("target_collection", sa.String(255), nullable=False),
    sa.Column("target_embedding", sa.String(64), nullable=False),
    sa.Column("target_chunk_max_tokens", sa.Integer, nullable=True),
    sa.Column("target_chunk_overlap_tokens", sa.Integer, nullable=True),
    sa.Column("failed", sa.Integer, nullable=False, default=0),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("switched_at", sa.DateTime(timezone=True), nullable=True),
)

reindex_items = sa.Table(
    "reindex_items",
    reindex_metadata,
    sa.Column("job_id", sa.String(32), primary_key=True),
    sa.Column("document_id", sa.String(64), primary_key=True),
    # "done" (its chunks are in the target) or "failed" (the new model/chunking could not
    # index it; it is retried by the switch's reconcile and counted in the status).
    sa.Column("state", sa.String(8), nullable=False),
    sa.Column("chunk_count", sa.Integer, nullable=False, default=0),
    sa.Column("error", sa.Text, nullable=True),
)


class JobState(enum.StrEnum):
    RUNNING = "running"  # copying documents into the target in the background
    READY = "ready"  # every document is in the target; the source still serves
    SWITCHED = "switched"  # the target serves; the source is kept (and written) for rollback
    DONE = "done"  # the source was dropped: no way back
    ABORTED = "aborted"  # the target was dropped; the source never stopped serving


ACTIVE = (JobState.RUNNING, JobState.READY, JobState.SWITCHED)


@dataclass(frozen=True, slots=True)
class Generation:
    """One physical collection of a profile and how it was made."""

    collection: str
    embedding: str  # configured embedding profile name
    chunk_max_tokens: int | None = None  # None: the knowledge base's / deployment's chunking
    chunk_overlap_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class ReindexJob:
    id: str
    profile: str
    state: JobState
    source: Generation
    target: Generation
    failed: int
    error: str | None
    created_at: datetime
    updated_at: datetime
    switched_at: datetime | None

    @property
    def serving(self) -> Generation:
        return self.target if self.state in (JobState.SWITCHED, JobState.DONE) else self.source

    @property
    def shadow(self) -> Generation:
        """The side that is not serving but must receive every write while the job is active."""
        return self.source if self.state is JobState.SWITCHED else self.target


class JobConflict(Exception):
    """The job is not in a state that allows this step (HTTP 409)."""


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class ReindexStateStore:
    """Bookkeeping on the metadata DB's engine (SQLite or PostgreSQL)."""

    def __init__(self, metadata: SqlMetadataStore) -> None:
        self._metadata = metadata

    @property
    def _engine(self) -> sa.engine.Engine:
        return self._metadata.engine

    def create_schema(self) -> None:
        reindex_metadata.create_all(self._engine)

    # -- serving ---------------------------------------------------------------------------
    def serving(self) -> dict[str, Generation]:
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(serving)).mappings().all()
        return {
            r["profile"]: Generation(
                r["collection"], r["embedding"], r["chunk_max_tokens"], r["chunk_overlap_tokens"]
            )
            for r in rows
        }

    @staticmethod
    def _set_serving(conn: sa.Connection, profile: str, gen: Generation) -> None:
        values = {
            "collection": gen.collection,
            "embedding": gen.embedding,
            "chunk_max_tokens": gen.chunk_max_tokens,
            "chunk_overlap_tokens": gen.chunk_overlap_tokens,
            "updated_at": _now(),
        }
        updated = conn.execute(
            serving.update().where(serving.c.profile == profile).values(**values)
        ).rowcount
        if not updated:
            conn.execute(serving.insert().values(profile=profile, **values))

    # -- jobs ------------------------------------------------------------------------------
    def create_job(self, profile: str, source: Generation, target: Generation) -> ReindexJob:
        """Raises JobConflict when the profile already has an active job."""
        now = _now()
        job_id = uuid.uuid4().hex
        with self._engine.begin() as conn:
            active = conn.execute(
                sa.select(reindex_jobs.c.id).where(
                    reindex_jobs.c.profile == profile,
                    reindex_jobs.c.state.in_([s.value for s in ACTIVE]),
                )
            ).first()
            if active is not None:
                raise JobConflict(
                    f"profile {profile!r} already has an active re-index ({active[0]}); "
                    "switch and finish it, or abort it, first"
                )
            conn.execute(
                reindex_jobs.insert().values(
                    id=job_id,
                    profile=profile,
                    state=JobState.RUNNING.value,
                    source_collection=source.collection,
                    source_embedding=source.embedding,
                    source_chunk_max_tokens=source.chunk_max_tokens,
                    source_chunk_overlap_tokens=source.chunk_overlap_tokens,
                    target_collection=target.collection,
                    target_embedding=target.embedding,
                    target_chunk_max_tokens=target.chunk_max_tokens,
                    target_chunk_overlap_tokens=target.chunk_overlap_tokens,
                    failed=0,
                    error=None,
                    created_at=now,
                    updated_at=now,
                    switched_at=None,
                )
            )
        job = self.get_job(job_id)
        assert job is not None
        return job

    def get_job(self, job_id: str) -> ReindexJob | None:
        with self._engine.connect() as conn:
            row = (
                conn.execute(sa.select(reindex_jobs).where(reindex_jobs.c.id == job_id))
                .mappings()
                .first()
            )
        return _job(row) if row else None

    def jobs(self, limit: int = 50) -> list[ReindexJob]:
        with self._engine.connect() as conn:
            rows = conn.execute(
                sa.select(reindex_jobs).order_by(reindex_jobs.c.created_at.desc()).limit(limit)
            ).mappings()
            return [_job(r) for r in rows]

    def active_jobs(self) -> list[ReindexJob]:
        with self._engine.connect() as conn:
            rows = conn.execute(
                sa.select(reindex_jobs).where(reindex_jobs.c.state.in_([s.value for s in ACTIVE]))
            ).mappings()
            return [_job(r) for r in rows]

    def count_generations(self, profile: str) -> int:
        with self._engine.connect() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count()).where(reindex_jobs.c.profile == profile)
                ).scalar()
                or 0
            )

    def transition(
        self,
        job_id: str,
        allowed: tuple[JobState, ...],
        to: JobState,
        serve: Generation | None = None,
        error: str | None = None,
    ) -> ReindexJob:
        """Move the job from one of ``allowed`` to ``to``; with ``serve``, point the profile at
        that generation in the same transaction (the atomic switch)."""
        now = _now()
        with self._engine.begin() as conn:
            row = (
                conn.execute(sa.select(reindex_jobs).where(reindex_jobs.c.id == job_id))
                .mappings()
                .first()
            )
            if row is None:
                raise LookupError(job_id)
            job = _job(row)
            if job.state not in allowed:
                raise JobConflict(
                    f"re-index {job_id} is {job.state.value}; this step needs it "
                    + " or ".join(s.value for s in allowed)
                )
            # Guarded update: of two concurrent callers only one moves the job.
            values: dict[str, Any] = {"state": to.value, "updated_at": now}
            if error is not None:
                values["error"] = error
            if to is JobState.SWITCHED:
                values["switched_at"] = now
            moved = conn.execute(
                reindex_jobs.update()
                .where(reindex_jobs.c.id == job_id, reindex_jobs.c.state == job.state.value)
                .values(**values)
            ).rowcount
            if not moved:
                raise JobConflict(f"re-index {job_id} changed state concurrently")
            if serve is not None:
                self._set_serving(conn, job.profile, serve)
        out = self.get_job(job_id)
        assert out is not None
        return out

    def set_error(self, job_id: str, error: str | None) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                reindex_jobs.update()
                .where(reindex_jobs.c.id == job_id)
                .values(error=error, updated_at=_now())
            )

    # -- items -----------------------------------------------------------------------------
    def record_item(
        self, job_id: str, document_id: str, ok: bool, chunk_count: int, error: str | None
    ) -> None:
        values = {"state": "done" if ok else "failed", "chunk_count": chunk_count, "error": error}
        with self._engine.begin() as conn:
            updated = conn.execute(
                reindex_items.update()
                .where(reindex_items.c.job_id == job_id, reindex_items.c.document_id == document_id)
                .values(**values)
            ).rowcount
            if not updated:
                try:
                    with conn.begin_nested():
                        conn.execute(
                            reindex_items.insert().values(
                                job_id=job_id, document_id=document_id, **values
                            )
                        )
                except sa.exc.IntegrityError:  # a concurrent writer (mirror) inserted it
                    conn.execute(
                        reindex_items.update()
                        .where(
                            reindex_items.c.job_id == job_id,
                            reindex_items.c.document_id == document_id,
                        )
                        .values(**values)
                    )

    def forget_item(self, job_id: str, document_id: str) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                reindex_items.delete().where(
                    reindex_items.c.job_id == job_id, reindex_items.c.document_id == document_id
                )
            )

    def _profile_documents(self, profile: str) -> Any:
        """Indexed documents whose knowledge base uses ``profile`` (the default knowledge base
        has no row and uses the default profile)."""
        kb_profile = sa.func.coalesce(knowledge_bases.c.embedding_profile, "default")
        return (
            sa.select(documents)
            .select_from(
                documents.outerjoin(
                    knowledge_bases,
                    sa.and_(
                        knowledge_bases.c.tenant_id == documents.c.tenant_id,
                        knowledge_bases.c.name == documents.c.kb,
                        documents.c.kb != DEFAULT_KB,
                    ),
                )
            )
            .where(documents.c.status == DocumentStatus.INDEXED.value, kb_profile == profile)
        )

    def pending(self, job: ReindexJob, limit: int, retry_failed: bool = False) -> list[str]:
        """Indexed documents of the job's profile not yet written to its target, oldest first.
        An anti-join, not a cursor: a document uploaded behind the cursor is still found."""
        done = sa.select(reindex_items.c.document_id).where(reindex_items.c.job_id == job.id)
        if not retry_failed:
            done = done.where(reindex_items.c.state.in_(["done", "failed"]))
        else:
            done = done.where(reindex_items.c.state == "done")
        query = (
            self._profile_documents(job.profile)
            .where(documents.c.id.not_in(done))
            .order_by(documents.c.created_at, documents.c.id)
            .limit(limit)
        )
        with self._engine.connect() as conn:
            return [r["id"] for r in conn.execute(query).mappings()]

    def profile_document_ids(self, profile: str) -> set[str]:
        with self._engine.connect() as conn:
            return {r["id"] for r in conn.execute(self._profile_documents(profile)).mappings()}

    def progress(self, job: ReindexJob) -> tuple[int, int, int]:
        """(documents written to the target, documents that failed there, indexed documents of
        the profile now)."""
        with self._engine.connect() as conn:
            rows = conn.execute(
                sa.select(reindex_items.c.state, sa.func.count())
                .where(reindex_items.c.job_id == job.id)
                .group_by(reindex_items.c.state)
            ).all()
            total = conn.execute(
                sa.select(sa.func.count()).select_from(
                    self._profile_documents(job.profile).subquery()
                )
            ).scalar()
        by_state = {str(s): int(n) for s, n in rows}
        return by_state.get("done", 0), by_state.get("failed", 0), int(total or 0)

    def live_backlog(self) -> int:
        """Documents waiting for (or in) live ingestion."""
        busy = [
            DocumentStatus.QUEUED.value,
            DocumentStatus.PARSING.value,
            DocumentStatus.EMBEDDING.value,
        ]
        with self._engine.connect() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count()).where(documents.c.status.in_(busy))
                ).scalar()
                or 0
            )

    def document(self, document_id: str) -> DocumentRecord | None:
        return self._metadata.get_document_any_tenant(document_id)


def _job(row: Any) -> ReindexJob:
    created = _aware(row["created_at"])
    updated = _aware(row["updated_at"])
    assert created is not None and updated is not None
    return ReindexJob(
        id=row["id"],
        profile=row["profile"],
        state=JobState(row["state"]),
        source=Generation(
            row["source_collection"],
            row["source_embedding"],
            row["source_chunk_max_tokens"],
            row["source_chunk_overlap_tokens"],
        ),
        target=Generation(
            row["target_collection"],
            row["target_embedding"],
            row["target_chunk_max_tokens"],
            row["target_chunk_overlap_tokens"],
        ),
        failed=int(row["failed"] or 0),
        error=row["error"],
        created_at=created,
        updated_at=updated,
        switched_at=_aware(row["switched_at"]),
    )
