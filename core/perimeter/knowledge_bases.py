"""Knowledge bases ("collections" in the API): named sets of documents per tenant, each with its
own embedding profile, chunking and answering model.

Every tenant has the ``default`` knowledge base without creating it; it uses the deployment's
settings and cannot be deleted. Created ones live in the metadata DB. The embedding profile is
fixed at creation (changing it would mean re-embedding every document); to move, create a new
knowledge base and upload again.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace

from perimeter.backends.errors import KnowledgeBaseExists
from perimeter.backends.protocols import MetadataStore
from perimeter.domain import DEFAULT_KB, UNSUPPORTED_POLICIES, KnowledgeBase
from perimeter.ingest.chunking import check_chunking, overlap_tokens_for

DEFAULT_PROFILE = "default"
# The OpenAI-compatible API's name for the default knowledge base.
OPENAI_DEFAULT_MODEL = "perimeter"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
RESERVED = frozenset({DEFAULT_KB, OPENAI_DEFAULT_MODEL})
log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_PROFILE",
    "InvalidKnowledgeBase",
    "KnowledgeBaseExists",
    "KnowledgeBaseNotFound",
    "KnowledgeBaseService",
    "TooManyKnowledgeBases",
    "UnknownEmbeddingProfile",
    "UnknownLLMModel",
]


class InvalidKnowledgeBase(ValueError):
    pass


class UnknownLLMModel(InvalidKnowledgeBase):
    """The collection's llm_model is not among the models the LLM server serves."""


class KnowledgeBaseNotFound(LookupError):
    pass


class TooManyKnowledgeBases(Exception):
    pass


class UnknownEmbeddingProfile(LookupError):
    """A collection names a profile the settings no longer define (an operator removed it)."""


@dataclass(frozen=True, slots=True)
class ChunkingDefaults:
    max_tokens: int
    overlap_tokens: int


class KnowledgeBaseService:
    def __init__(
        self,
        metadata: MetadataStore,
        profiles: Collection[str],
        chunking: ChunkingDefaults,
        max_per_tenant: int,
        served_models: Callable[[], list[str] | None] | None = None,
    ) -> None:
        """``served_models``: the names the LLM server serves, None when it cannot be asked;
        when given, a collection's llm_model must be one of them."""
        self._metadata = metadata
        self._profiles = {DEFAULT_PROFILE, *profiles}
        self._chunking = chunking
        self._max_per_tenant = max_per_tenant
        self._served_models = served_models

    @property
    def profiles(self) -> list[str]:
        return sorted(self._profiles)

    def default(self, tenant_id: str) -> KnowledgeBase:
        return KnowledgeBase(
            tenant_id=tenant_id,
            name=DEFAULT_KB,
            description="Documents uploaded without a collection.",
        )

    def get(self, tenant_id: str, name: str) -> KnowledgeBase | None:
        if name in (DEFAULT_KB, OPENAI_DEFAULT_MODEL):
            return self.default(tenant_id)
        return self._metadata.get_kb(tenant_id, name)

    def require(self, tenant_id: str, name: str) -> KnowledgeBase:
        kb = self.get(tenant_id, name)
        if kb is None:
            raise KnowledgeBaseNotFound(name)
        return kb

    def list(self, tenant_id: str) -> list[tuple[KnowledgeBase, int]]:
        """Every knowledge base of the tenant, the default first, with its document count."""
        counts = self._metadata.kb_document_counts(tenant_id)
        kbs = [self.default(tenant_id), *self._metadata.list_kbs(tenant_id)]
        return [(kb, counts.get(kb.name, 0)) for kb in kbs]

    def create(self, kb: KnowledgeBase) -> KnowledgeBase:
        """Validate and store. Raises InvalidKnowledgeBase, KnowledgeBaseExists or
        TooManyKnowledgeBases."""
        if kb.name in RESERVED:
            raise KnowledgeBaseExists(kb.name)
        if not NAME_RE.match(kb.name):
            raise InvalidKnowledgeBase(
                "name must be 1-64 characters of a-z, 0-9, '-' or '_', starting with a letter "
                "or digit"
            )
        if kb.embedding_profile not in self._profiles:
            raise InvalidKnowledgeBase(
                f"unknown embedding profile {kb.embedding_profile!r}; this deployment has "
                f"{self.profiles} (PERIMETER_KB__EMBEDDING_PROFILES)"
            )
        try:
            check_chunking(
                kb.chunk_max_tokens or self._chunking.max_tokens, kb.chunk_overlap_tokens
            )
        except ValueError as exc:
            raise InvalidKnowledgeBase(str(exc)) from exc
        if kb.llm_model is not None:
            self._check_llm_model(kb.llm_model)
        if kb.unsupported_policy is not None and kb.unsupported_policy not in UNSUPPORTED_POLICIES:
            raise InvalidKnowledgeBase(
                f"unsupported_policy must be one of {', '.join(UNSUPPORTED_POLICIES)}"
            )
        if self._metadata.count_kbs(kb.tenant_id) >= self._max_per_tenant:
            raise TooManyKnowledgeBases(
                f"a tenant may have at most {self._max_per_tenant} knowledge bases "
                "(PERIMETER_KB__MAX_PER_TENANT)"
            )
        return self._metadata.create_kb(replace(kb, created_at=None))

    def _check_llm_model(self, name: str) -> None:
        # A misspelt adapter name would otherwise surface only at the first question, as a 503
        # from the LLM server's 404; checked here, it is the creator's 422.
        if self._served_models is None:
            return
        served = self._served_models()
        if served is None:
            log.warning(
                "LLM server not reachable: llm_model %r of a new collection unchecked", name
            )
            return
        if name not in served:
            raise UnknownLLMModel(
                f"llm_model {name!r} is not served by the LLM server, which serves {served} "
                "(vLLM: add the adapter with --enable-lora --lora-modules NAME=PATH)"
            )

    def chunking(self, kb: KnowledgeBase) -> tuple[int, int]:
        """(max_tokens, overlap_tokens) for documents of this knowledge base."""
        max_tokens = kb.chunk_max_tokens or self._chunking.max_tokens
        overlap = overlap_tokens_for(
            max_tokens, kb.chunk_overlap_tokens, self._chunking.overlap_tokens
        )
        return max_tokens, overlap

    def forget(self, tenant_id: str, name: str) -> bool:
        """Drop the record (its documents must be gone already: IngestionService.delete_kb)."""
        return self._metadata.delete_kb(tenant_id, name)
