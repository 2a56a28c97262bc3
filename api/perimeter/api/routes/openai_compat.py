"""OpenAI-compatible endpoints, so chat front-ends and SDKs that speak OpenAI's API can use
Perimeter as a "model": ``GET /v1/models`` and ``POST /v1/chat/completions``.

A model name is a knowledge base (a collection): ``perimeter`` is the default one, any other
name is a collection of the caller's tenant, and an unknown name is a 404 like OpenAI's
``model_not_found``. Which LLM writes the answer is the router's choice (settings.llm.routes,
then the collection's own model); the response's ``perimeter.llm_model`` says which.

Every error on these routes uses OpenAI's shape, ``{"error": {"message", "type", "param",
"code"}}``, because OpenAI clients read that shape; it still carries the ``code`` and
``message`` of Perimeter's own error body.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from perimeter.api.deps import Principal, PrincipalDep, ServicesDep
from perimeter.api.errors import (
    APIError,
    context_exceeded_message,
    log_unexpected,
    store_unavailable_message,
)
from perimeter.audit import record_query
from perimeter.backends.errors import LLMContextExceeded, LLMUnavailable, StoreUnavailable
from perimeter.composition import Services
from perimeter.domain import DEFAULT_KB, KnowledgeBase, SearchFilter
from perimeter.knowledge_bases import OPENAI_DEFAULT_MODEL, UnknownEmbeddingProfile
from perimeter.retrieval.answer import Answer, Citation
from perimeter.retrieval.conversation import Rewrite, Turn
from perimeter.retrieval.policy import apply_policy, sentence_verdicts

log = logging.getLogger(__name__)

DEFAULT_MODEL = OPENAI_DEFAULT_MODEL
MAX_QUESTION_CHARS = 4000  # the same bound as POST /v1/query's question
# Reported as every model's creation time: a stable value, since a knowledge base has no
# single creation moment that clients could rely on.
_STARTED = int(time.time())


class OpenAIError(Exception):
    """An error rendered in OpenAI's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.type = type_
        self.param = param
        self.headers = headers


def _error_body(message: str, code: str, type_: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _error_response(exc: OpenAIError) -> JSONResponse:
    return JSONResponse(
        _error_body(exc.message, exc.code, exc.type, exc.param),
        status_code=exc.status,
        headers=exc.headers,
    )


def _as_openai_error(exc: Exception) -> OpenAIError | None:
    """Map the exceptions the app's handlers know onto OpenAI's error types."""
    if isinstance(exc, OpenAIError):
        return exc
    if isinstance(exc, RequestValidationError):
        errors = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in errors):
            return OpenAIError(400, "the request body is not valid JSON", "malformed_json")
        first = errors[0] if errors else {}
        loc = [str(p) for p in first.get("loc", []) if p != "body"]
        where = ".".join(loc) or None
        message = first.get("msg", "the request is not valid")
        return OpenAIError(
            400,
            f"{where}: {message}" if where else message,
            "invalid_request",
            param=where,
        )
    if isinstance(exc, APIError):
        kind = "invalid_request_error" if exc.status < 500 else "server_error"
        return OpenAIError(exc.status, exc.message, exc.code, kind, headers=exc.headers)
    if isinstance(exc, StarletteHTTPException):
        # getattr: the request gate's body-limit errors carry their own code (and close).
        code = getattr(exc, "code", None) or {404: "not_found", 405: "method_not_allowed"}.get(
            exc.status_code, "http_error"
        )
        headers = dict(exc.headers) if exc.headers else None
        return OpenAIError(exc.status_code, str(exc.detail), code, headers=headers)
    if isinstance(exc, LLMContextExceeded):
        # OpenAI's own code for it, which its SDKs and chat front-ends recognise.
        return OpenAIError(
            400, context_exceeded_message(exc), "context_length_exceeded", param="messages"
        )
    if isinstance(exc, LLMUnavailable):
        log.warning("LLM unavailable: %s", exc)
        return OpenAIError(
            503,
            "the language model is not reachable; try again shortly",
            "llm_unavailable",
            "server_error",
            headers={"Retry-After": "10"},
        )
    if isinstance(exc, StoreUnavailable):  # qdrant_store maps transport errors to it
        log.warning("vector store unavailable: %s", exc)
        return OpenAIError(
            503,
            store_unavailable_message(exc),
            "vector_store_unavailable",
            "server_error",
            headers={"Retry-After": "5"},
        )
    if isinstance(exc, UnknownEmbeddingProfile):
        return OpenAIError(503, str(exc), "embedding_profile_unavailable", "server_error")
    return None


class OpenAIRoute(APIRoute):
    """Renders this router's errors (validation included, which FastAPI raises inside the route
    handler) in OpenAI's shape, leaving the app-wide handlers untouched for the other routes."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                return await original(request)
            except Exception as exc:
                mapped = _as_openai_error(exc)
                if mapped is not None:
                    return _error_response(mapped)
                return _error_response(
                    OpenAIError(500, log_unexpected(exc), "internal_error", "server_error")
                )

        return handler


router = APIRouter(prefix="/v1", tags=["openai-compatible"], route_class=OpenAIRoute)


# -- request and response bodies ------------------------------------------------------------
class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class ChatMessageIn(BaseModel):
    # Clients send fields we do not use (name, tool_calls, ...): accept and ignore them.
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(p.text for p in self.content if p.type == "text" and p.text)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    # Sampling knobs (temperature, max_tokens, ...) are accepted and ignored: the grounded
    # answer uses the operator's LLM settings, so a client cannot loosen grounding.
    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[ChatMessageIn] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    top_k: int | None = Field(
        default=None, ge=1, le=50, description="Perimeter extension: sources to retrieve."
    )


class ModelOut(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelOut]


class CompatCitation(BaseModel):
    n: int
    document_id: str
    filename: str
    page: int | None
    snippet: str
    score: float
    ocr_confidence: float | None = None


# -- helpers --------------------------------------------------------------------------------
def _model(name: str) -> ModelOut:
    return ModelOut(id=name, created=_STARTED, owned_by="perimeter")


def _resolve_model(services: Services, principal: Principal, name: str) -> KnowledgeBase:
    """The knowledge base a model name stands for."""
    kb = services.kbs.get(principal.tenant_id, name)
    if kb is None:
        raise OpenAIError(
            404,
            f"The model {name!r} does not exist; GET /v1/models lists the collections",
            "model_not_found",
            param="model",
        )
    return kb


def _model_id(kb: KnowledgeBase) -> str:
    return DEFAULT_MODEL if kb.name == DEFAULT_KB else kb.name


def _question(messages: list[ChatMessageIn]) -> str:
    # The last user turn is the question: the grounded prompt is built around one question, and
    # a client's system prompt must not steer the answer away from the sources. Earlier turns
    # only make it a follow-up (_history, perimeter.retrieval.conversation).
    for message in reversed(messages):
        if message.role == "user":
            text = message.text().strip()
            if not text:
                raise OpenAIError(
                    400, "the last user message is empty", "empty_question", param="messages"
                )
            if len(text) > MAX_QUESTION_CHARS:
                raise OpenAIError(
                    400,
                    f"the last user message exceeds {MAX_QUESTION_CHARS} characters",
                    "question_too_long",
                    param="messages",
                )
            return text
    raise OpenAIError(400, "messages contain no user message", "no_user_message", param="messages")


def _history(messages: list[ChatMessageIn]) -> list[Turn]:
    """The exchanges before the last user message: each user turn with the assistant reply that
    followed it. System, developer and tool turns are left out: they never reach the rewrite or
    the answer prompt, so a client's system prompt cannot steer the answer."""
    last_user = max(i for i, m in enumerate(messages) if m.role == "user")
    turns: list[Turn] = []
    for message in messages[:last_user]:
        text = message.text().strip()
        if not text:
            continue
        if message.role == "user":
            turns.append(Turn(question=text[:MAX_QUESTION_CHARS]))
        elif message.role == "assistant" and turns and turns[-1].answer is None:
            # Our own replies end with a "Sources:" list; it says nothing about the topic.
            answer = text.split("\n\nSources:\n", 1)[0]
            turns[-1] = Turn(question=turns[-1].question, answer=answer[:MAX_QUESTION_CHARS])
    return turns


def _filter(principal: Principal, kb: KnowledgeBase) -> SearchFilter:
    return SearchFilter(tenant_id=principal.tenant_id, groups=principal.groups, kb=kb.name)


def _audit(
    services: Any, principal: Principal, question: str, served: list[Any], details: dict[str, Any]
) -> None:
    # As for POST /v1/query: what is served is on record before the LLM sees it.
    record_query(services.audit, principal, question, served, details)


def _observe_llm(request: Request, a: Answer) -> None:
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.observe_llm(a.timings, a.usage.completion_tokens)


def _citation(c: Citation) -> dict[str, Any]:
    return CompatCitation(
        n=c.n,
        document_id=c.document_id,
        filename=c.filename,
        page=c.page,
        snippet=c.snippet,
        score=c.score,
        ocr_confidence=c.ocr_confidence,
    ).model_dump()


def sources_block(citations: list[Citation]) -> str:
    """The human-readable list appended to the answer, for clients that show only the text."""
    if not citations:
        return ""
    lines = []
    for c in citations:
        page = f", page {c.page}" if c.page is not None else ""
        lines.append(f"[{c.n}] {c.filename}{page}")
    return "\n\nSources:\n" + "\n".join(lines)


def _shown_sources(a: Answer) -> list[Citation]:
    # A refused answer cites nothing, but its sources are still shown for the reader to check.
    return a.sources if a.refused else a.citations


def _usage(a: Answer) -> dict[str, int]:
    prompt, completion = a.usage.prompt_tokens, a.usage.completion_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _extension(a: Answer, rewrite: Rewrite | None = None) -> dict[str, Any]:
    # Perimeter's verdicts, for clients that know to look; OpenAI clients ignore unknown keys.
    out: dict[str, Any] = {
        "grounded": a.grounded,
        "abstained": a.abstained,
        "unsupported_sentences": a.unsupported_sentences,
        "llm_model": a.model,
        # The same verdicts /v1/query returns (perimeter.retrieval.policy).
        "sentences": sentence_verdicts(a),
        "unsupported_policy": a.policy,
        "redacted_sentences": a.redacted_sentences,
        "refused": a.refused,
    }
    if rewrite is not None and rewrite.method != "none":
        # The follow-up's standalone form, which retrieval searched for.
        out["search_query"] = rewrite.search_query
        out["rewrite"] = rewrite.method
        out["rewrite_llm_ms"] = round(rewrite.llm_ms, 2)
    return out


def _chunk(
    cid: str, created: int, model: str, delta: dict[str, Any], finish: str | None = None
) -> dict[str, Any]:
    return {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


def _data(payload: Any) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


# -- routes ---------------------------------------------------------------------------------
@router.get("/models", response_model=ModelList, summary="Knowledge bases, as OpenAI models")
def list_models(services: ServicesDep, principal: PrincipalDep) -> ModelList:
    # Model names are the caller's tenant's knowledge bases, listed to callers only.
    return ModelList(
        data=[_model(_model_id(kb)) for kb, _n in services.kbs.list(principal.tenant_id)]
    )


@router.get("/models/{model}", response_model=ModelOut, summary="One knowledge base")
def get_model(model: str, services: ServicesDep, principal: PrincipalDep) -> ModelOut:
    return _model(_model_id(_resolve_model(services, principal, model)))


@router.post(
    "/chat/completions",
    summary="OpenAI-compatible chat: the last user message is answered from the documents",
    responses={
        200: {"description": "chat.completion, or chat.completion.chunk SSE with stream=true"},
        404: {"description": "Unknown model (knowledge base)"},
        503: {"description": "LLM or vector store unavailable"},
    },
)
def chat_completions(
    body: ChatCompletionRequest, services: ServicesDep, principal: PrincipalDep, request: Request
) -> Any:
    kb = _resolve_model(services, principal, body.model)
    model = _model_id(kb)
    question = _question(body.messages)
    top_k = body.top_k or services.settings.retrieval.top_k
    answers = services.answers_for(kb)
    llm_model = services.router.choose(question, kb).model
    # Earlier turns make the last question a follow-up: retrieval searches its standalone form.
    rewrite = services.rewriter.rewrite(question, _history(body.messages), model=llm_model)
    cid = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    details: dict[str, Any] = {
        "endpoint": "chat.completions",
        "model": model,
        "top_k": top_k,
        "stream": body.stream,
    }
    if rewrite.method != "none":
        details.update(search_query=rewrite.search_query, rewrite=rewrite.method)
    policy = services.unsupported_policy(kb)

    if not body.stream:
        result = answers.retrieve(
            rewrite.search_query, _filter(principal, kb), top_k, context=rewrite.context
        )
        _audit(services, principal, question, answers.relevant(result, None), details)
        a = answers.answer_from(rewrite.answer_question, result, None, llm_model)
        a.timings.update(rewrite.timings())
        _observe_llm(request, a)
        a = apply_policy(a, policy)
        return {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": a.answer + sources_block(_shown_sources(a)),
                        "refusal": None,
                    },
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": _usage(a),
            "citations": [_citation(c) for c in a.citations],
            "perimeter": _extension(a, rewrite),
        }

    # Retrieval runs here, before the response starts, so its errors are still plain JSON.
    result, events = answers.stream_answer(
        rewrite.answer_question,
        _filter(principal, kb),
        top_k,
        model=llm_model,
        search_query=rewrite.search_query,
        context=rewrite.context,
    )
    _audit(services, principal, question, answers.relevant(result, None), details)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)

    def stream() -> Iterator[str]:
        yield _data(_chunk(cid, created, model, {"role": "assistant", "content": ""}))
        try:
            for kind, payload in events:
                if kind == "token":
                    # Under redact/refuse nothing unverified may reach the client: the text is
                    # held back and sent once verified (annotate streams as it is written).
                    if policy == "annotate":
                        yield _data(_chunk(cid, created, model, {"content": payload}))
                    continue
                a: Answer = apply_policy(payload, policy)
                _observe_llm(request, a)
                if policy != "annotate":
                    yield _data(_chunk(cid, created, model, {"content": a.answer}))
                block = sources_block(_shown_sources(a))
                if block:
                    yield _data(_chunk(cid, created, model, {"content": block}))
                final = _chunk(cid, created, model, {}, "stop")
                final["citations"] = [_citation(c) for c in a.citations]
                final["perimeter"] = _extension(a, rewrite)
                yield _data(final)
                if include_usage:
                    usage = _chunk(cid, created, model, {})
                    usage["choices"] = []
                    usage["usage"] = _usage(a)
                    yield _data(usage)
        except LLMContextExceeded as exc:
            yield _data(
                _error_body(
                    context_exceeded_message(exc),
                    "context_length_exceeded",
                    "invalid_request_error",
                )
            )
            return
        except LLMUnavailable as exc:
            log.warning("LLM unavailable mid-stream: %s", exc)
            # OpenAI's SDKs raise on a data line that carries an "error" object.
            yield _data(
                _error_body(
                    "the language model is not reachable; try again shortly",
                    "llm_unavailable",
                    "server_error",
                )
            )
            return
        yield "data: [DONE]\n\n"

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
