"""Knowledge bases, called collections in the API: create, list, get, delete.

Each has its own embedding profile, chunking and answering model (see
perimeter/knowledge_bases.py). Uploads and questions name one with ``collection``; the OpenAI
endpoint takes its name as the ``model``.
"""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from perimeter.api.deps import PrincipalDep, ServicesDep
from perimeter.api.errors import APIError
from perimeter.api.schemas import CollectionCreate, CollectionList, CollectionOut
from perimeter.auth.acl import visible_document_counts
from perimeter.composition import Services
from perimeter.domain import DEFAULT_KB, KnowledgeBase
from perimeter.knowledge_bases import (
    InvalidKnowledgeBase,
    KnowledgeBaseExists,
    TooManyKnowledgeBases,
    UnknownLLMModel,
)

router = APIRouter(prefix="/v1", tags=["collections"])


def _out(services: Services, kb: KnowledgeBase, document_count: int) -> CollectionOut:
    max_tokens, overlap = services.kbs.chunking(kb)
    return CollectionOut(
        name=kb.name,
        description=kb.description,
        embedding_profile=kb.embedding_profile,
        chunk_max_tokens=max_tokens,
        chunk_overlap_tokens=overlap,
        llm_model=kb.llm_model,
        sensitivity=kb.sensitivity,
        unsupported_policy=services.unsupported_policy(kb),
        document_count=document_count,
        created_at=kb.created_at,
    )


@router.post(
    "/collections",
    status_code=status.HTTP_201_CREATED,
    response_model=CollectionOut,
    summary="Create a collection (knowledge base)",
)
def create_collection(
    body: CollectionCreate, services: ServicesDep, principal: PrincipalDep
) -> CollectionOut:
    try:
        kb = services.kbs.create(
            KnowledgeBase(
                tenant_id=principal.tenant_id,
                name=body.name,
                description=body.description,
                embedding_profile=body.embedding_profile,
                chunk_max_tokens=body.chunk_max_tokens,
                chunk_overlap_tokens=body.chunk_overlap_tokens,
                llm_model=body.llm_model,
                sensitivity=body.sensitivity,
                unsupported_policy=body.unsupported_policy,
            )
        )
    except UnknownLLMModel as exc:
        raise APIError(422, "unknown_llm_model", str(exc)) from exc
    except InvalidKnowledgeBase as exc:
        raise APIError(422, "invalid_collection", str(exc)) from exc
    except KnowledgeBaseExists as exc:
        message = f"a collection named {body.name!r} exists"
        raise APIError(409, "collection_exists", message) from exc
    except TooManyKnowledgeBases as exc:
        raise APIError(409, "too_many_collections", str(exc)) from exc
    services.audit.record_for(principal, "collection_create", details={"name": kb.name})
    return _out(services, kb, 0)


@router.get("/collections", response_model=CollectionList, summary="List collections")
def list_collections(services: ServicesDep, principal: PrincipalDep) -> CollectionList:
    # Counts of what this caller may read, not of the whole tenant (groups hide the rest).
    counts = visible_document_counts(services.metadata, principal.tenant_id, principal.groups)
    return CollectionList(
        collections=[
            _out(services, kb, counts.get(kb.name, 0))
            for kb, _all in services.kbs.list(principal.tenant_id)
        ],
        embedding_profiles=services.kbs.profiles,
    )


@router.get("/collections/{name}", response_model=CollectionOut, summary="Get a collection")
def get_collection(name: str, services: ServicesDep, principal: PrincipalDep) -> CollectionOut:
    kb = services.kbs.require(principal.tenant_id, name)
    visible = visible_document_counts(services.metadata, principal.tenant_id, principal.groups)
    count = visible.get(kb.name, 0)
    return _out(services, kb, count)


@router.delete(
    "/collections/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a collection and every document in it",
)
def delete_collection(name: str, services: ServicesDep, principal: PrincipalDep) -> Response:
    kb = services.kbs.require(principal.tenant_id, name)
    if kb.name == DEFAULT_KB:
        raise APIError(
            409,
            "collection_protected",
            "the default collection cannot be deleted; delete its documents instead",
        )
    # Documents first: a crash in between leaves the record, and a retry finishes the job.
    deleted = services.ingestion.delete_documents_of_kb(principal.tenant_id, kb.name)
    services.kbs.forget(principal.tenant_id, kb.name)
    services.audit.record_for(
        principal, "collection_delete", details={"name": kb.name, "documents": deleted}
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
