"""Documents and jobs: upload (202 + job), list, get, delete."""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Response, UploadFile, status

from perimeter.api import guards
from perimeter.api.deps import PrincipalDep, ServicesDep
from perimeter.api.errors import APIError
from perimeter.api.schemas import (
    DocumentList,
    DocumentOut,
    JobOut,
    UploadedOut,
    UploadResponse,
)
from perimeter.auth.acl import list_visible_documents
from perimeter.backends.errors import FileTooLarge
from perimeter.domain import DEFAULT_KB, DocumentStatus
from perimeter.ingest.errors import InvalidDocument, UnsupportedFileType
from perimeter.ingest.pipeline import StagedUpload
from perimeter.text_safety import InvalidText, check_text, text_problem

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["documents"])

MAX_METADATA_CHARS = 16_384


def _parse_metadata(raw: str | None) -> dict[str, Any]:
    if raw is None or not raw.strip():
        return {}
    if len(raw) > MAX_METADATA_CHARS:
        raise APIError(413, "metadata_too_large", f"metadata exceeds {MAX_METADATA_CHARS} chars")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise APIError(400, "malformed_metadata", f"metadata is not valid JSON: {exc.msg}") from exc
    except RecursionError as exc:  # "[[[[..." past the parser's recursion limit
        raise APIError(400, "malformed_metadata", "metadata is nested too deeply") from exc
    if not isinstance(value, dict):
        raise APIError(400, "malformed_metadata", "metadata must be a JSON object")
    try:
        check_text(value, "metadata")
    except InvalidText as exc:
        raise APIError(400, "invalid_text", str(exc)) from exc
    for key, item in value.items():
        if not isinstance(item, str | int | float | bool) and not (
            isinstance(item, list) and all(isinstance(i, str) for i in item)
        ):
            raise APIError(
                400,
                "malformed_metadata",
                f"metadata field {key!r} must be a string, number, boolean or list of strings",
            )
    return value


@router.post(
    "/documents",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=UploadResponse,
    summary="Upload one or many files for ingestion",
)
def upload_documents(
    services: ServicesDep,
    principal: PrincipalDep,
    files: Annotated[list[UploadFile], File(description="One or many files.")],
    metadata: Annotated[str | None, Form(description="JSON object applied to every file.")] = None,
    groups: Annotated[
        str | None,
        Form(
            description='JSON list of groups that may read these files, e.g. ["hr"]; absent or '
            "[]: every member of the tenant."
        ),
    ] = None,
    collection: Annotated[
        str, Form(max_length=64, description="Collection (knowledge base) to add the files to.")
    ] = DEFAULT_KB,
) -> UploadResponse:
    limits = services.settings.api
    if not files:
        raise APIError(400, "no_files", "attach at least one file in the 'files' field")
    if len(files) > limits.max_files_per_request:
        raise APIError(
            413, "too_many_files", f"at most {limits.max_files_per_request} files per request"
        )
    meta = _parse_metadata(metadata)
    acl = guards.upload_groups(groups, principal)
    kb = services.kbs.require(principal.tenant_id, collection)

    # Stage and validate every file first: a request with one bad file stores nothing.
    staged: list[StagedUpload] = []
    total = 0
    try:
        for upload in files:
            name = upload.filename or "upload"
            # NUL and other control characters are stripped by safe_filename; a lone
            # surrogate is no character at all, so it is refused.
            problem = text_problem(name.replace("\x00", ""))
            if problem is not None:
                raise APIError(400, "invalid_text", f"a file name contains {problem}")
            try:
                item = services.ingestion.stage(
                    upload.file, name, upload.content_type, limits.max_file_bytes
                )
            except (InvalidDocument, UnsupportedFileType, FileTooLarge) as exc:
                code, http = {
                    InvalidDocument: ("invalid_document", 422),
                    UnsupportedFileType: ("unsupported_file_type", 415),
                    FileTooLarge: ("file_too_large", 413),
                }[type(exc)]
                raise APIError(http, code, f"{name}: {exc}", {"filename": name}) from exc
            staged.append(item)
            total += item.size_bytes
            if total > limits.max_request_bytes:
                raise APIError(
                    413,
                    "request_too_large",
                    f"files exceed {limits.max_request_bytes // (1024 * 1024)} MiB per request",
                )
        for item in staged:
            guards.check_not_hidden_duplicate(
                services, principal, item.content_hash, item.filename, kb.name
            )
    except BaseException:
        services.ingestion.discard(staged)
        raise

    out: list[UploadedOut] = []
    for item in staged:
        submitted = services.ingestion.submit(item, principal.tenant_id, meta, acl, kb.name)
        if submitted.created:
            try:
                services.queue.enqueue_ingest(submitted.document.id)
            except Exception:
                # The row is durable; the recovery sweep enqueues it once the broker is back.
                log.exception("enqueue failed for %s; left queued", submitted.document.id)
        out.append(
            UploadedOut(
                document_id=submitted.document.id,
                job_id=submitted.job.id,
                filename=submitted.document.filename,
                status=submitted.document.status.value,
                duplicate=not submitted.created,
            )
        )
    services.audit.record_for(
        principal,
        "upload",
        document_ids=[u.document_id for u in out],
        details={
            "files": [{"filename": u.filename, "duplicate": u.duplicate} for u in out],
            "groups": acl,
            "collection": kb.name,
        },
    )
    return UploadResponse(documents=out)


@router.get("/documents", response_model=DocumentList, summary="List documents")
def list_documents(
    services: ServicesDep,
    principal: PrincipalDep,
    status_filter: Annotated[DocumentStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
    collection: Annotated[str | None, Query(max_length=64)] = None,
) -> DocumentList:
    kb = services.kbs.require(principal.tenant_id, collection).name if collection else None
    docs = list_visible_documents(
        services.metadata, principal.tenant_id, principal.groups, status_filter, limit, offset, kb
    )
    return DocumentList(documents=[DocumentOut.of(d) for d in docs], limit=limit, offset=offset)


def _not_found(kind: str, ident: str) -> APIError:
    return APIError(404, f"{kind}_not_found", f"no {kind} with id {ident!r}")


@router.get("/documents/{document_id}", response_model=DocumentOut, summary="Get a document")
def get_document(document_id: str, services: ServicesDep, principal: PrincipalDep) -> DocumentOut:
    doc = guards.readable_document(services, principal, document_id)
    if doc is None:
        raise _not_found("document", document_id)
    return DocumentOut.of(doc)


@router.delete(
    "/documents/{document_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a document, its chunks and its file",
)
def delete_document(document_id: str, services: ServicesDep, principal: PrincipalDep) -> Response:
    if guards.readable_document(services, principal, document_id) is None or not (
        services.ingestion.delete(principal.tenant_id, document_id)
    ):
        raise _not_found("document", document_id)
    services.audit.record_for(principal, "delete", document_ids=[document_id])
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/documents/{document_id}/reindex",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobOut,
    summary="Ingest a document again (after a failure or a model change)",
)
def reindex_document(document_id: str, services: ServicesDep, principal: PrincipalDep) -> JobOut:
    doc = guards.readable_document(services, principal, document_id)
    if doc is None:
        raise _not_found("document", document_id)
    services.audit.record_for(principal, "reindex", document_ids=[document_id])
    job = services.metadata.new_job(principal.tenant_id, document_id)
    services.queue.enqueue_ingest(document_id)
    return JobOut.of(job)


@router.get("/jobs/{job_id}", response_model=JobOut, summary="Get an ingestion job")
def get_job(job_id: str, services: ServicesDep, principal: PrincipalDep) -> JobOut:
    job = guards.readable_job(services, principal, job_id)
    if job is None:
        raise _not_found("job", job_id)
    return JobOut.of(job)
