"""One error shape for every failure: ``{"error": {"code", "message", "details"}}``.

No response ever carries a traceback; unexpected errors are logged with a request id that the
response repeats, so an operator can find the log line.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from perimeter.backends.errors import (
    FileTooLarge,
    LLMContextExceeded,
    LLMUnavailable,
    StoreUnavailable,
)
from perimeter.errors import APIError, InvalidDocument, UnsupportedFileType
from perimeter.knowledge_bases import KnowledgeBaseNotFound, UnknownEmbeddingProfile
from perimeter.logs import new_request_id, request_id_var

log = logging.getLogger(__name__)


def error_response(
    status: int,
    code: str,
    message: str,
    details: Any | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def log_unexpected(exc: BaseException) -> str:
    """Log an unexpected error with the request's id (the one in ``X-Request-ID``) and return
    the message a client gets: the id, never the traceback. Every 500 of every route says it
    this way, so the id a user quotes is the one in the log."""
    request_id = request_id_var.get() or new_request_id()
    log.exception("unhandled error (request %s)", request_id, exc_info=exc)
    return f"internal error; the server log has request id {request_id}"


def store_unavailable_message(exc: StoreUnavailable) -> str:
    if exc.where:
        return f"Qdrant not reachable at {exc.where}; is the service up? Try again shortly"
    return "the vector store is not reachable; try again shortly"


def context_exceeded_message(exc: LLMContextExceeded) -> str:
    return (
        "the question does not fit the language model's context window even with a single "
        f"source; ask a shorter question ({exc})"
    )


def _clean_validation(errors: list[Any]) -> list[dict[str, Any]]:
    out = []
    for e in errors:
        out.append(
            {
                "loc": [str(p) for p in e.get("loc", [])],
                "message": e.get("msg", ""),
                "type": e.get("type", ""),
            }
        )
    return out


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_response(400, "malformed_json", "the request body is not valid JSON")
        return error_response(
            422, "invalid_request", "the request is not valid", _clean_validation(errors)
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = getattr(exc, "code", None) or {404: "not_found", 405: "method_not_allowed"}.get(
            exc.status_code, "http_error"
        )
        # exc.headers: the request gate's body-limit errors close the connection.
        headers = dict(exc.headers) if exc.headers else None
        return error_response(exc.status_code, code, str(exc.detail), headers=headers)

    @app.exception_handler(InvalidDocument)
    async def _invalid(_: Request, exc: InvalidDocument) -> JSONResponse:
        return error_response(422, "invalid_document", str(exc))

    @app.exception_handler(UnsupportedFileType)
    async def _unsupported(_: Request, exc: UnsupportedFileType) -> JSONResponse:
        return error_response(415, "unsupported_file_type", str(exc))

    @app.exception_handler(FileTooLarge)
    async def _too_large(_: Request, exc: FileTooLarge) -> JSONResponse:
        return error_response(413, "file_too_large", str(exc))

    @app.exception_handler(KnowledgeBaseNotFound)
    async def _no_kb(_: Request, exc: KnowledgeBaseNotFound) -> JSONResponse:
        return error_response(
            404,
            "collection_not_found",
            f"no collection named {str(exc)!r}; GET /v1/collections lists them",
        )

    @app.exception_handler(UnknownEmbeddingProfile)
    async def _no_profile(_: Request, exc: UnknownEmbeddingProfile) -> JSONResponse:
        return error_response(503, "embedding_profile_unavailable", str(exc))

    @app.exception_handler(StoreUnavailable)
    async def _store(_: Request, exc: StoreUnavailable) -> JSONResponse:
        log.warning("vector store unavailable: %s", exc)
        return error_response(
            503,
            "vector_store_unavailable",
            store_unavailable_message(exc),
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(LLMContextExceeded)
    async def _context(_: Request, exc: LLMContextExceeded) -> JSONResponse:
        return error_response(400, "context_length_exceeded", context_exceeded_message(exc))

    @app.exception_handler(LLMUnavailable)
    async def _llm(_: Request, exc: LLMUnavailable) -> JSONResponse:
        log.warning("LLM unavailable: %s", exc)
        return error_response(
            503,
            "llm_unavailable",
            "the language model is not reachable; try again shortly, or ask with "
            "allow_degraded=true for the sources alone",
            headers={"Retry-After": "10"},
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        return error_response(500, "internal_error", log_unexpected(exc))
