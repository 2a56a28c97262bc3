"""Server-side conversations in the metadata database (SQLite or PostgreSQL, the engine of
:class:`~perimeter.backends.sql_metadata.SqlMetadataStore`).

Every read and write is keyed on (tenant, actor): a conversation is its caller's alone, so one
tenant never sees another's, and two API keys of one tenant do not see each other's either. An
unknown id and someone else's id look the same (None), so ids cannot be probed.

Retention: conversations untouched for ``retention_days`` are deleted, their turns with them, by
:meth:`purge_expired` (the API calls it when a conversation is created, and
``perimeter admin purge-conversations`` runs it on demand).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from perimeter.backends.sql_metadata import SqlMetadataStore, metadata_obj
from perimeter.domain import ConversationRecord, ConversationTurnRecord

MAX_TITLE_CHARS = 200

conversations = sa.Table(
    "conversations",
    metadata_obj,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("tenant_id", sa.String(128), nullable=False),
    sa.Column("actor", sa.String(255), nullable=False),
    sa.Column("kb", sa.String(64), nullable=False),
    sa.Column("title", sa.String(MAX_TITLE_CHARS), nullable=False),
    sa.Column("turn_count", sa.Integer, nullable=False, default=0),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
sa.Index(
    "ix_conversations_owner",
    conversations.c.tenant_id,
    conversations.c.actor,
    conversations.c.updated_at,
)
sa.Index("ix_conversations_updated", conversations.c.updated_at)

conversation_turns = sa.Table(
    "conversation_turns",
    metadata_obj,
    sa.Column("conversation_id", sa.String(32), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("question", sa.Text, nullable=False),
    sa.Column("search_query", sa.Text, nullable=False),
    sa.Column("rewrite_method", sa.String(8), nullable=False),
    sa.Column("response", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def title_of(question: str) -> str:
    text = " ".join(question.split())
    return text if len(text) <= 80 else text[:79].rstrip() + "…"


class SqlConversationStore:
    """:class:`~perimeter.backends.protocols.ConversationStore` over SQLAlchemy."""

    def __init__(self, metadata: SqlMetadataStore) -> None:
        self._metadata = metadata  # shares its engine (and its create_schema)

    def _owned(self, tenant_id: str, actor: str, conversation_id: str) -> Any:
        c = conversations.c
        return sa.and_(c.id == conversation_id, c.tenant_id == tenant_id, c.actor == actor)

    def create(self, tenant_id: str, actor: str, kb: str, title: str = "") -> ConversationRecord:
        now = _now()
        conversation_id = uuid.uuid4().hex
        with self._metadata.engine.begin() as conn:
            conn.execute(
                conversations.insert().values(
                    id=conversation_id,
                    tenant_id=tenant_id,
                    actor=actor[:255],
                    kb=kb,
                    title=title_of(title)[:MAX_TITLE_CHARS],
                    turn_count=0,
                    created_at=now,
                    updated_at=now,
                )
            )
        created = self.get(tenant_id, actor, conversation_id, with_turns=False)
        assert created is not None
        return created

    def get(
        self, tenant_id: str, actor: str, conversation_id: str, with_turns: bool = True
    ) -> ConversationRecord | None:
        with self._metadata.engine.connect() as conn:
            row = (
                conn.execute(
                    sa.select(conversations).where(
                        self._owned(tenant_id, actor[:255], conversation_id)
                    )
                )
                .mappings()
                .first()
            )
            if row is None:
                return None
            turns: list[ConversationTurnRecord] = []
            if with_turns:
                turns = [
                    _turn(r)
                    for r in conn.execute(
                        sa.select(conversation_turns)
                        .where(conversation_turns.c.conversation_id == conversation_id)
                        .order_by(conversation_turns.c.seq)
                    ).mappings()
                ]
        return _conversation(row, turns)

    def list(
        self, tenant_id: str, actor: str, limit: int = 50, offset: int = 0
    ) -> list[ConversationRecord]:
        c = conversations.c
        query = (
            sa.select(conversations)
            .where(c.tenant_id == tenant_id, c.actor == actor[:255])
            .order_by(c.updated_at.desc(), c.id)
            .limit(limit)
            .offset(offset)
        )
        with self._metadata.engine.connect() as conn:
            return [_conversation(r, []) for r in conn.execute(query).mappings()]

    def append_turn(
        self,
        tenant_id: str,
        actor: str,
        conversation_id: str,
        *,
        question: str,
        search_query: str,
        rewrite_method: str,
        response: dict[str, Any],
    ) -> ConversationTurnRecord | None:
        """Add a turn at the end; None when the conversation is gone (deleted meanwhile)."""
        now = _now()
        c = conversations.c
        with self._metadata.engine.begin() as conn:
            # Bumping the count first takes the row lock (PostgreSQL) / the write lock (SQLite),
            # so two turns appended at once get distinct sequence numbers.
            bumped = conn.execute(
                conversations.update()
                .where(self._owned(tenant_id, actor[:255], conversation_id))
                .values(turn_count=c.turn_count + 1, updated_at=now)
                .returning(c.turn_count, c.title)
            ).first()
            if bumped is None:
                return None
            seq, title = int(bumped[0]), str(bumped[1])
            if not title:
                conn.execute(
                    conversations.update()
                    .where(c.id == conversation_id)
                    .values(title=title_of(question)[:MAX_TITLE_CHARS])
                )
            conn.execute(
                conversation_turns.insert().values(
                    conversation_id=conversation_id,
                    seq=seq,
                    question=question,
                    search_query=search_query,
                    rewrite_method=rewrite_method[:8],
                    response=response,
                    created_at=now,
                )
            )
        return ConversationTurnRecord(seq, question, search_query, rewrite_method, response, now)

    def delete(self, tenant_id: str, actor: str, conversation_id: str) -> bool:
        with self._metadata.engine.begin() as conn:
            deleted = conn.execute(
                conversations.delete().where(self._owned(tenant_id, actor[:255], conversation_id))
            ).rowcount
            if deleted:
                conn.execute(
                    conversation_turns.delete().where(
                        conversation_turns.c.conversation_id == conversation_id
                    )
                )
        return bool(deleted)

    def purge_expired(self, retention_days: int | None, now: datetime | None = None) -> int:
        """Delete conversations not updated for ``retention_days``; None or 0 keeps them all.
        Returns how many were deleted."""
        if not retention_days:
            return 0
        cutoff = (now or _now()) - timedelta(days=retention_days)
        c = conversations.c
        with self._metadata.engine.begin() as conn:
            expired = [
                str(i) for i in conn.execute(sa.select(c.id).where(c.updated_at < cutoff)).scalars()
            ]
            if not expired:
                return 0
            conn.execute(
                conversation_turns.delete().where(conversation_turns.c.conversation_id.in_(expired))
            )
            conn.execute(conversations.delete().where(c.id.in_(expired)))
        return len(expired)

    def touch(self, conversation_id: str, at: datetime) -> None:
        """Set a conversation's last-update time (operators backdating, and the retention
        tests)."""
        with self._metadata.engine.begin() as conn:
            conn.execute(
                conversations.update()
                .where(conversations.c.id == conversation_id)
                .values(updated_at=at)
            )


def _turn(row: Any) -> ConversationTurnRecord:
    return ConversationTurnRecord(
        seq=int(row["seq"]),
        question=row["question"],
        search_query=row["search_query"],
        rewrite_method=row["rewrite_method"],
        response=dict(row["response"] or {}),
        created_at=_aware(row["created_at"]),
    )


def _conversation(row: Any, turns: list[ConversationTurnRecord]) -> ConversationRecord:
    return ConversationRecord(
        id=row["id"],
        tenant_id=row["tenant_id"],
        actor=row["actor"],
        kb=row["kb"],
        title=row["title"] or "",
        created_at=_aware(row["created_at"]),
        updated_at=_aware(row["updated_at"]),
        turn_count=int(row["turn_count"] or 0),
        turns=turns,
    )
