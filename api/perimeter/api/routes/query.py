"""Questions in, grounded answers out (JSON or Server-Sent Events)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from perimeter.api import guards
from perimeter.api.deps import Principal, PrincipalDep, ServicesDep
from perimeter.api.errors import APIError, context_exceeded_message
from perimeter.api.routes.conversations import FollowUp, open_conversation
from perimeter.api.schemas import (
    CitationOut,
    QueryRequest,
    QueryResponse,
    SentenceVerdictOut,
    UsageOut,
)
from perimeter.audit import record_query
from perimeter.backends.errors import LLMContextExceeded, LLMUnavailable
from perimeter.domain import SearchFilter
from perimeter.retrieval.answer import Answer, Citation, citation_of, result_timings
from perimeter.retrieval.policy import apply_policy, sentence_verdicts
from perimeter.text_safety import scrub

router = APIRouter(prefix="/v1", tags=["query"])


def _filter(principal: Principal, body: QueryRequest, kb: str) -> SearchFilter:
    f = body.filters
    if f is not None:
        guards.check_query_filters(f.metadata, (f.date_ranges or {}).keys())
    # The tenant (and group scope) come from the caller's identity, never from the request body.
    return SearchFilter(
        tenant_id=principal.tenant_id,
        kb=kb,
        document_ids=f.document_ids if f else None,
        filenames=f.filenames if f else None,
        metadata=dict(f.metadata) if f and f.metadata else None,
        groups=principal.groups,
        date_ranges=(
            {
                k: (
                    r.gte.isoformat() if r.gte else None,
                    r.lte.isoformat() if r.lte else None,
                )
                for k, r in f.date_ranges.items()
            }
            if f and f.date_ranges
            else None
        ),
    )


def _cit(c: Citation) -> CitationOut:
    # scrub: parser output (odd PDF font maps) may hold lone surrogates, which would make the
    # whole answer unserialisable (perimeter/text_safety.py).
    return CitationOut(
        n=c.n,
        document_id=c.document_id,
        filename=scrub(c.filename),
        page=c.page,
        section=scrub(c.section),
        snippet=scrub(c.snippet),
        score=c.score,
        ocr_confidence=c.ocr_confidence,
    )


def _response(a: Answer) -> QueryResponse:
    return QueryResponse(
        sentences=[SentenceVerdictOut(**v) for v in sentence_verdicts(a)],  # type: ignore[arg-type]
        unsupported_policy=a.policy,
        redacted_sentences=a.redacted_sentences,
        refused=a.refused,
        answer=scrub(a.answer),  # the LLM's JSON may escape a lone surrogate
        citations=[_cit(c) for c in a.citations],
        sources=[_cit(c) for c in a.sources],
        grounded=a.grounded,
        unsupported_sentences=a.unsupported_sentences,
        invalid_citations=a.invalid_citations,
        abstained=a.abstained,
        degraded=a.degraded,
        usage=UsageOut(
            prompt_tokens=a.usage.prompt_tokens, completion_tokens=a.usage.completion_tokens
        ),
        timings=a.timings,
        model=a.model,
    )


def _sources_only(
    sources: list[CitationOut], timings: dict[str, float], degraded: bool
) -> QueryResponse:
    return QueryResponse(
        answer=None,
        citations=[],
        sources=sources,
        grounded=None,
        unsupported_sentences=[],
        invalid_citations=[],
        abstained=not sources,
        degraded=degraded,
        usage=UsageOut(prompt_tokens=0, completion_tokens=0),
        timings=timings,
    )


def _observe_llm(request: Request, a: Answer) -> None:
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.observe_llm(a.timings, a.usage.completion_tokens)


def _audit(
    services: Any,
    principal: Principal,
    body: QueryRequest,
    served: list[Any],
    turn: FollowUp | None = None,
) -> None:
    # Before anything is returned or sent to the LLM: what was served is on record.
    details: dict[str, Any] = {
        "collection": body.collection,
        "mode": body.mode,
        "top_k": body.top_k,
        "stream": body.stream,
    }
    if body.filters is not None:
        details["filters"] = body.filters.model_dump(mode="json", exclude_none=True)
    if turn is not None:
        details.update(turn.audit_details())
    record_query(services.audit, principal, body.question, served, details)


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


@router.post(
    "/query",
    response_model=QueryResponse,
    summary="Ask a question; get an answer with citations (stream=true for SSE)",
    responses={503: {"description": "LLM or vector store unavailable"}},
)
def query(
    body: QueryRequest, services: ServicesDep, principal: PrincipalDep, request: Request
) -> Any:
    conversation = open_conversation(
        services,
        principal,
        body.conversation_id,
        body.collection if "collection" in body.model_fields_set else None,
    )
    collection = conversation.kb if conversation is not None else body.collection
    kb = services.kbs.require(principal.tenant_id, collection)
    answers = services.answers_for(kb)
    flt = _filter(principal, body, kb.name)
    top_k = body.top_k
    model = services.router.choose(body.question, kb).model
    # In a conversation the question is read as a follow-up: retrieval searches its standalone
    # form; without one, all three texts are the question as asked.
    turn = FollowUp.of(services, conversation, body.question, model, not body.retrieval_only)

    if body.retrieval_only:
        result = answers.retrieve(turn.search_query, flt, top_k, body.mode, turn.context)
        relevant = answers.relevant(result, body.min_score)
        _audit(services, principal, body, relevant, turn)
        return turn.finish(
            services,
            principal,
            _sources_only(
                [_cit(citation_of(i, c)) for i, c in enumerate(relevant, 1)],
                result_timings(result),
                False,
            ),
        )

    if body.stream:
        _result, events = answers.stream_answer(
            turn.answer_question,
            flt,
            top_k,
            body.min_score,
            body.mode,
            model,
            search_query=turn.search_query,
            context=turn.context,
        )
        _audit(services, principal, body, answers.relevant(_result, body.min_score), turn)

        def stream() -> Iterator[str]:
            try:
                for kind, payload in events:
                    if kind == "token":
                        yield _sse("token", {"text": payload})
                    else:
                        _observe_llm(request, payload)
                        shown = apply_policy(payload, services.unsupported_policy(kb))
                        done = turn.finish(services, principal, _response(shown))
                        yield _sse("answer", done.model_dump(mode="json"))
            except LLMUnavailable:
                if body.allow_degraded:
                    # As without streaming: the sources, marked degraded, instead of an error.
                    relevant = answers.relevant(_result, body.min_score)
                    sources = [_cit(citation_of(i, c)) for i, c in enumerate(relevant, 1)]
                    degraded = _sources_only(sources, result_timings(_result), degraded=True)
                    done = turn.finish(services, principal, degraded)
                    yield _sse("answer", done.model_dump(mode="json"))
                    yield _sse("done", {})
                    return
                yield _sse(
                    "error",
                    {
                        "error": {
                            "code": "llm_unavailable",
                            "message": "the language model is not reachable",
                        }
                    },
                )
            except LLMContextExceeded as exc:
                message = context_exceeded_message(exc)
                yield _sse(
                    "error", {"error": {"code": "context_length_exceeded", "message": message}}
                )
            yield _sse("done", {})

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    result = answers.retrieve(turn.search_query, flt, top_k, body.mode, turn.context)
    _audit(services, principal, body, answers.relevant(result, body.min_score), turn)
    try:
        answer = answers.answer_from(turn.answer_question, result, body.min_score, model)
        _observe_llm(request, answer)
        answer = apply_policy(answer, services.unsupported_policy(kb))
        return turn.finish(services, principal, _response(answer))
    except LLMUnavailable as exc:
        relevant = answers.relevant(result, body.min_score)
        sources = [_cit(citation_of(i, c)) for i, c in enumerate(relevant, 1)]
        if body.allow_degraded:
            return turn.finish(
                services, principal, _sources_only(sources, result_timings(result), degraded=True)
            )
        raise APIError(
            503,
            "llm_unavailable",
            "the language model is not reachable; the retrieved sources are in details. "
            "Retry later, or ask with allow_degraded=true",
            {"sources": [s.model_dump() for s in sources]},
            headers={"Retry-After": "10"},
        ) from exc
