"""Server-side conversations: create, list, read, delete; ``POST /v1/query`` with a
``conversation_id`` appends turns (query.py calls the helpers below).

A conversation belongs to its caller: tenant and actor (API key id, OIDC subject). Another
caller's conversation answers 404 exactly like a missing one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Query, Response

from perimeter.api.deps import Principal, PrincipalDep, ServicesDep
from perimeter.api.errors import APIError
from perimeter.api.schemas import (
    ConversationCreate,
    ConversationList,
    ConversationOut,
    ConversationTurnOut,
    QueryResponse,
)
from perimeter.composition import Services
from perimeter.domain import ConversationRecord
from perimeter.retrieval.conversation import Turn
from perimeter.retrieval.search import NO_CONTEXT, SearchContext

router = APIRouter(prefix="/v1", tags=["conversations"])


def _out(c: ConversationRecord, with_turns: bool) -> ConversationOut:
    return ConversationOut(
        id=c.id,
        collection=c.kb,
        title=c.title,
        turn_count=c.turn_count,
        created_at=c.created_at,
        updated_at=c.updated_at,
        turns=(
            [
                ConversationTurnOut(
                    seq=t.seq,
                    question=t.question,
                    search_query=t.search_query,
                    rewrite_method=t.rewrite_method,
                    response=t.response,
                    created_at=t.created_at,
                )
                for t in c.turns
            ]
            if with_turns
            else None
        ),
    )


def _not_found() -> APIError:
    return APIError(404, "conversation_not_found", "no such conversation")


def owned_conversation(
    services: Services, principal: Principal, conversation_id: str
) -> ConversationRecord:
    """The caller's conversation with its turns, or 404."""
    record = services.conversations.get(principal.tenant_id, principal.actor, conversation_id)
    if record is None:
        raise _not_found()
    return record


def history_of(record: ConversationRecord) -> list[Turn]:
    return [
        Turn(
            question=t.question,
            search_query=t.search_query,
            answer=t.response.get("answer") if isinstance(t.response, dict) else None,
        )
        for t in record.turns
    ]


def append_turn(
    services: Services,
    principal: Principal,
    conversation_id: str,
    question: str,
    search_query: str,
    method: str,
    response: dict[str, Any],
) -> None:
    services.conversations.append_turn(
        principal.tenant_id,
        principal.actor,
        conversation_id,
        question=question,
        search_query=search_query,
        rewrite_method=method,
        response=response,
    )


@router.post(
    "/conversations",
    response_model=ConversationOut,
    status_code=201,
    summary="Start a conversation; ask in it with POST /v1/query and conversation_id",
)
def create_conversation(
    body: ConversationCreate, services: ServicesDep, principal: PrincipalDep
) -> ConversationOut:
    kb = services.kbs.require(principal.tenant_id, body.collection)
    # Retention is enforced here, where conversations are made: no background job to run.
    services.conversations.purge_expired(services.settings.conversation.retention_days)
    record = services.conversations.create(
        principal.tenant_id, principal.actor, kb.name, body.title
    )
    services.audit.record_for(
        principal,
        "conversation.create",
        details={"conversation_id": record.id, "collection": kb.name},
    )
    return _out(record, with_turns=True)


@router.get(
    "/conversations",
    response_model=ConversationList,
    summary="Your conversations, most recently updated first",
)
def list_conversations(
    services: ServicesDep,
    principal: PrincipalDep,
    limit: int = Query(default=50, ge=1, le=500),
    offset: int = Query(default=0, ge=0, le=1_000_000),
) -> ConversationList:
    records = services.conversations.list(principal.tenant_id, principal.actor, limit, offset)
    return ConversationList(
        conversations=[_out(r, with_turns=False) for r in records], limit=limit, offset=offset
    )


@router.get(
    "/conversations/{conversation_id}",
    response_model=ConversationOut,
    summary="One of your conversations with its turns",
    responses={404: {"description": "No such conversation (or not yours)"}},
)
def get_conversation(
    conversation_id: str, services: ServicesDep, principal: PrincipalDep
) -> ConversationOut:
    return _out(owned_conversation(services, principal, conversation_id), with_turns=True)


@router.delete(
    "/conversations/{conversation_id}",
    status_code=204,
    summary="Delete one of your conversations and its turns",
    responses={404: {"description": "No such conversation (or not yours)"}},
)
def delete_conversation(
    conversation_id: str, services: ServicesDep, principal: PrincipalDep
) -> Response:
    if not services.conversations.delete(principal.tenant_id, principal.actor, conversation_id):
        raise _not_found()
    services.audit.record_for(
        principal, "conversation.delete", details={"conversation_id": conversation_id}
    )
    return Response(status_code=204)


def open_conversation(
    services: Services, principal: Principal, conversation_id: str | None, collection: str | None
) -> ConversationRecord | None:
    """The conversation a question is asked in (None: none named). ``collection``: the one the
    request named explicitly, which must be the conversation's own."""
    if conversation_id is None:
        return None
    record = owned_conversation(services, principal, conversation_id)
    if collection is not None and collection != record.kb:
        raise APIError(
            400,
            "conversation_collection_mismatch",
            f"conversation {record.id} asks collection {record.kb!r}, not {collection!r}; "
            "leave collection out or start a new conversation",
        )
    limit = services.settings.conversation.max_turns
    if record.turn_count >= limit:
        raise APIError(
            409,
            "conversation_full",
            f"the conversation has reached {limit} turns; start a new one",
        )
    return record


@dataclass
class FollowUp:
    """One question as the conversation reads it: what retrieval searches, what the answer
    prompt asks, and what the response and the stored turn record about it."""

    question: str
    search_query: str
    answer_question: str
    method: str
    timings: dict[str, float] = field(default_factory=dict)
    conversation_id: str | None = None
    collection: str | None = None
    # how retrieval searches beyond search_query (Rewrite.context)
    context: SearchContext = NO_CONTEXT

    @classmethod
    def of(
        cls,
        services: Services,
        conversation: ConversationRecord | None,
        question: str,
        model: str | None,
        allow_llm: bool,
    ) -> FollowUp:
        if conversation is None:
            return cls(question, question, question, "none")
        t0 = time.perf_counter()
        rewrite = services.rewriter.rewrite(
            question, history_of(conversation), model=model, allow_llm=allow_llm
        )
        timings = {"rewrite_ms": round((time.perf_counter() - t0) * 1000, 2), **rewrite.timings()}
        return cls(
            question,
            rewrite.search_query,
            rewrite.answer_question,
            rewrite.method,
            timings,
            conversation.id,
            conversation.kb,
            rewrite.context,
        )

    def audit_details(self) -> dict[str, Any]:
        if self.conversation_id is None:
            return {}
        return {
            "collection": self.collection,
            "conversation_id": self.conversation_id,
            "search_query": self.search_query,
            "rewrite": self.method,
        }

    def finish(
        self, services: Services, principal: Principal, response: QueryResponse
    ) -> QueryResponse:
        """Stamp the response and, in a conversation, store it as the next turn."""
        if self.conversation_id is None:
            return response
        response.conversation_id = self.conversation_id
        response.search_query = self.search_query if self.search_query != self.question else None
        response.timings = {**response.timings, **self.timings}
        append_turn(
            services,
            principal,
            self.conversation_id,
            self.question,
            self.search_query,
            self.method,
            response.model_dump(mode="json"),
        )
        return response
