"""The one place that turns settings into services. FastAPI's lifespan, the Celery worker and the
CLI all call :func:`build_services`; nothing else constructs backends."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from perimeter.audit import AuditLog
from perimeter.auth.api_keys import ApiKeyStore
from perimeter.auth.service import Authenticator
from perimeter.backends.blob_store import BlobStore
from perimeter.backends.bm25_sparse import Bm25SparseEncoder
from perimeter.backends.cross_encoder_reranker import CrossEncoderReranker
from perimeter.backends.micro_batching import MicroBatchingEmbedder
from perimeter.backends.model_paths import force_offline
from perimeter.backends.openai_llm import OpenAICompatibleLLM
from perimeter.backends.protocols import Embedder, SparseEncoder
from perimeter.backends.qdrant_store import QdrantChunkStore
from perimeter.backends.sentence_transformer_embedder import SentenceTransformerEmbedder
from perimeter.backends.sql_metadata import SqlMetadataStore
from perimeter.backends.unstructured_parser import UnstructuredParser
from perimeter.domain import DocumentRecord, KnowledgeBase
from perimeter.ingest.pipeline import IndexTarget, IngestionService
from perimeter.knowledge_bases import (
    DEFAULT_PROFILE,
    ChunkingDefaults,
    KnowledgeBaseService,
    UnknownEmbeddingProfile,
)
from perimeter.queueing import CeleryIngestQueue, create_celery_app
from perimeter.retrieval.answer import AnswerService
from perimeter.retrieval.routing import ModelRouter, RoutingRule
from perimeter.retrieval.search import Retriever
from perimeter.settings import EmbeddingSettings, Settings
from perimeter.tracing import Tracing, build_tracer


@dataclass
class EmbeddingProfile:
    """Everything tied to one embedding model: the model, its sparse encoder, its own Qdrant
    collection (vector sizes differ between models), and the retriever and answer service
    that search it. Knowledge bases choose a profile at creation."""

    name: str
    embedder: Embedder
    sparse_encoder: SparseEncoder | None
    store: QdrantChunkStore
    retriever: Retriever
    answers: AnswerService

    def ensure_ready(self, indexed_metadata_fields: list[str]) -> None:
        self.store.ensure_collection(
            self.embedder.dimension,
            sparse_idf=self.sparse_encoder is not None and self.sparse_encoder.uses_idf_modifier,
        )
        for key in indexed_metadata_fields:
            self.store.create_metadata_index(key)


class ProfileRegistry:
    """Embedding profiles by name. The default one is built with the services; the others on
    first use, so a process loads only the models its knowledge bases need."""

    def __init__(
        self,
        default: EmbeddingProfile,
        build: Callable[[str], EmbeddingProfile],
        names: list[str],
    ) -> None:
        self._profiles = {DEFAULT_PROFILE: default}
        self._build = build
        self._names = {DEFAULT_PROFILE, *names}
        self._lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        return sorted(self._names)

    def get(self, name: str) -> EmbeddingProfile:
        """Raises LookupError for a profile the settings do not define."""
        profile = self._profiles.get(name)
        if profile is not None:
            return profile
        if name not in self._names:
            raise UnknownEmbeddingProfile(
                f"embedding profile {name!r} is not configured (PERIMETER_KB__EMBEDDING_PROFILES)"
            )
        with self._lock:
            if name not in self._profiles:
                self._profiles[name] = self._build(name)
            return self._profiles[name]


@dataclass
class Services:
    settings: Settings
    metadata: SqlMetadataStore
    blobs: BlobStore
    store: QdrantChunkStore  # the default profile's collection; other profiles share its client
    parser: UnstructuredParser
    llm: OpenAICompatibleLLM
    ingestion: IngestionService
    queue: CeleryIngestQueue
    keys: ApiKeyStore
    audit: AuditLog
    auth: Authenticator
    profiles: ProfileRegistry
    kbs: KnowledgeBaseService
    router: ModelRouter
    tracing: Tracing  # OpenTelemetry: a NoOp tracer unless tracing.enabled

    def ensure_ready(self) -> None:
        """Create what must exist (schema, collection). Loads the embedder to learn its size."""
        self.metadata.create_schema()
        self.profiles.get(DEFAULT_PROFILE).ensure_ready(
            self.settings.retrieval.indexed_metadata_fields
        )

    # The default embedding profile's parts: what the default collection uses.
    @property
    def embedder(self) -> Embedder:
        return self.profiles.get(DEFAULT_PROFILE).embedder

    @property
    def sparse_encoder(self) -> SparseEncoder | None:
        return self.profiles.get(DEFAULT_PROFILE).sparse_encoder

    @property
    def retriever(self) -> Retriever:
        return self.profiles.get(DEFAULT_PROFILE).retriever

    @property
    def answers(self) -> AnswerService:
        return self.profiles.get(DEFAULT_PROFILE).answers

    def answers_for(self, kb: KnowledgeBase) -> AnswerService:
        """The answer service that searches this knowledge base's embedding profile."""
        return self.profiles.get(kb.embedding_profile).answers

    def close(self) -> None:
        self.store.close()
        self.metadata.close()
        self.tracing.shutdown()  # exports the spans still buffered


def build_embedder(settings: Settings, profile: EmbeddingSettings | None = None) -> Embedder:
    """The model of ``profile`` (default: the ``embedding.*`` settings), wrapped for
    cross-document micro-batching unless that is off."""
    e = profile or settings.embedding
    embedder = _model_embedder(settings, e)
    if e.micro_batch_max > 0:
        return MicroBatchingEmbedder(
            embedder,
            max_batch=e.micro_batch_max,
            max_wait_ms=e.micro_batch_wait_ms,
            concurrency=e.micro_batch_concurrency,
        )
    return embedder


def onnx_cache_dir(settings: Settings, e: EmbeddingSettings) -> Path:
    return e.onnx_cache_dir or settings.storage.data_dir / "onnx"


def _model_embedder(settings: Settings, e: EmbeddingSettings) -> Embedder:
    if e.backend != "torch":
        from perimeter.backends.onnx_embedder import OnnxEmbedder

        return OnnxEmbedder(
            model=e.model,
            cache_dir=onnx_cache_dir(settings, e),
            kind=e.kind,
            runtime=e.backend,
            quantize=e.onnx_quantize,
            threads=e.onnx_threads,
            precision=e.openvino_precision,
            batch_size=e.batch_size,
            max_seq_length=e.max_seq_length,
            query_prefix=e.query_prefix,
            document_prefix=e.document_prefix,
        )
    if e.kind == "bge-m3":
        from perimeter.backends.bge_m3 import BgeM3Embedder

        return BgeM3Embedder(
            model=e.model,
            device=e.device,
            batch_size=e.batch_size,
            max_seq_length=e.max_seq_length,
            query_prefix=e.query_prefix,
            document_prefix=e.document_prefix,
            threads=e.torch_threads,
        )
    return SentenceTransformerEmbedder(
        model=e.model,
        device=e.device,
        batch_size=e.batch_size,
        max_seq_length=e.max_seq_length,
        query_prefix=e.query_prefix,
        document_prefix=e.document_prefix,
        threads=e.torch_threads,
    )


def llm_base_url(settings: Settings) -> str:
    return settings.llm.base_url or f"http://127.0.0.1:{settings.llm.embedded_port}/v1"


def build_services(
    settings: Settings,
    *,
    embedder: Embedder | None = None,
    llm: OpenAICompatibleLLM | None = None,
) -> Services:
    """Build every service from settings. ``embedder``/``llm`` let a caller share an already
    loaded model between compositions (the eval harness, the test suite) instead of loading it
    again; they are the same real implementations, not fakes."""
    force_offline()
    tracing = build_tracer(settings.tracing)
    data_dir = settings.storage.data_dir
    metadata = SqlMetadataStore(settings.database_url)
    blobs = BlobStore(settings.storage.blobs_dir)
    llm = llm or OpenAICompatibleLLM(
        base_url=llm_base_url(settings),
        model=settings.llm.model,
        api_key=settings.llm.api_key.get_secret_value(),
        timeout_s=settings.llm.timeout_s,
        max_retries=settings.llm.max_retries,
        max_tokens=settings.llm.max_tokens,
        temperature=settings.llm.temperature,
    )
    reranker = (
        CrossEncoderReranker(settings.retrieval.reranker_model, device=settings.embedding.device)
        if settings.retrieval.reranker_model
        else None
    )
    store = QdrantChunkStore(
        collection=settings.qdrant.collection,
        url=settings.qdrant.url,
        path=None if settings.qdrant.url else data_dir / "qdrant",
        api_key=settings.qdrant.api_key.get_secret_value() if settings.qdrant.api_key else None,
        timeout_s=settings.qdrant.timeout_s,
        fusion=settings.retrieval.fusion,
        rrf_k=settings.retrieval.rrf_k,
        dense_weight=settings.retrieval.dense_weight,
        sparse_weight=settings.retrieval.sparse_weight,
    )

    def build_profile(name: str, given: Embedder | None = None) -> EmbeddingProfile:
        config = (
            settings.embedding if name == DEFAULT_PROFILE else settings.kb.embedding_profiles[name]
        )
        profile_embedder = given or build_embedder(settings, config)
        # A model with its own learned sparse head (BGE-M3) needs no lexical encoder.
        sparse: SparseEncoder | None = (
            None
            if config.kind == "bge-m3"
            else Bm25SparseEncoder(
                k1=settings.retrieval.bm25_k1,
                b=settings.retrieval.bm25_b,
                avg_len=settings.retrieval.bm25_avg_len,
            )
        )
        profile_store = (
            store
            if name == DEFAULT_PROFILE
            else store.sibling(f"{settings.qdrant.collection}__{name}")
        )
        retriever = Retriever(
            profile_embedder,
            profile_store,
            sparse,
            prefetch_limit=settings.retrieval.prefetch_limit,
            reranker=reranker,
            rerank_candidates=settings.retrieval.rerank_candidates,
            tracer=tracing.tracer,
        )
        profile = EmbeddingProfile(
            name=name,
            embedder=profile_embedder,
            sparse_encoder=sparse,
            store=profile_store,
            retriever=retriever,
            answers=AnswerService(
                retriever,
                llm,
                profile_embedder,
                min_dense_score=settings.retrieval.min_dense_score,
                max_tokens=settings.llm.max_tokens,
                tracer=tracing.tracer,
            ),
        )
        if name != DEFAULT_PROFILE:
            # Built on first use, after start-up: make its collection exist now.
            profile.ensure_ready(settings.retrieval.indexed_metadata_fields)
        return profile

    default = build_profile(DEFAULT_PROFILE, embedder)
    profiles = ProfileRegistry(default, build_profile, list(settings.kb.embedding_profiles))
    kbs = KnowledgeBaseService(
        metadata,
        profiles.names,
        ChunkingDefaults(settings.chunking.max_tokens, settings.chunking.overlap_tokens),
        settings.kb.max_per_tenant,
    )

    def target_for(doc: DocumentRecord) -> IndexTarget:
        kb = kbs.get(doc.tenant_id, doc.kb)
        if kb is None:
            raise LookupError(f"knowledge base {doc.kb!r} of tenant {doc.tenant_id!r}")
        profile = profiles.get(kb.embedding_profile)
        max_tokens, overlap = kbs.chunking(kb)
        return IndexTarget(
            profile.embedder, profile.sparse_encoder, profile.store, max_tokens, overlap
        )

    parser = UnstructuredParser(pdf_strategy=settings.parser.pdf_strategy)
    ingestion = IngestionService(
        metadata=metadata,
        blobs=blobs,
        parser=parser,
        embedder=default.embedder,
        sparse_encoder=default.sparse_encoder,
        store=store,
        max_tokens=settings.chunking.max_tokens,
        overlap_tokens=settings.chunking.overlap_tokens,
        embed_batch_size=settings.embedding.batch_size,
        max_attempts=settings.broker.max_attempts,
        targets=target_for,
        tracer=tracing.tracer,
    )
    router = ModelRouter(
        [
            RoutingRule(
                model=r.model,
                collections=frozenset(r.collections) if r.collections is not None else None,
                sensitivity=frozenset(r.sensitivity) if r.sensitivity is not None else None,
                min_question_chars=r.min_question_chars,
                max_question_chars=r.max_question_chars,
            )
            for r in settings.llm.routes
        ],
        default_model=settings.llm.model,
    )
    queue = CeleryIngestQueue(create_celery_app(settings), settings.broker.queue)
    # Keys and the audit log live in the metadata DB and share its engine.
    keys = ApiKeyStore(metadata)
    auth = Authenticator.from_settings(settings.auth, keys)
    return Services(
        settings=settings,
        metadata=metadata,
        blobs=blobs,
        store=store,
        parser=parser,
        llm=llm,
        ingestion=ingestion,
        queue=queue,
        keys=keys,
        audit=AuditLog(metadata),
        auth=auth,
        profiles=profiles,
        kbs=kbs,
        router=router,
        tracing=tracing,
    )
