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
from perimeter.backends.ocr import RapidOcrEngine, max_side_for
from perimeter.backends.openai_llm import LLMUnavailable, OpenAICompatibleLLM
from perimeter.backends.protocols import (
    BlobStorage,
    ChunkStore,
    Embedder,
    IngestQueue,
    KnowledgeBases,
    SparseEncoder,
)
from perimeter.backends.qdrant_edge_store import QdrantEdgeChunkStore
from perimeter.backends.qdrant_store import ClusterLayout, QdrantChunkStore
from perimeter.backends.reindex_state import Generation, ReindexStateStore
from perimeter.backends.sentence_transformer_embedder import SentenceTransformerEmbedder
from perimeter.backends.sql_conversations import SqlConversationStore
from perimeter.backends.sql_metadata import SqlMetadataStore
from perimeter.backends.unstructured_parser import UnstructuredParser
from perimeter.domain import DocumentRecord, KnowledgeBase
from perimeter.ingest.chunking import overlap_tokens_for
from perimeter.ingest.pipeline import IndexTarget, IngestionService
from perimeter.ingest.reindex import ReindexService, ReindexTools
from perimeter.knowledge_bases import (
    DEFAULT_PROFILE,
    ChunkingDefaults,
    KnowledgeBaseService,
    UnknownEmbeddingProfile,
)
from perimeter.queueing import CeleryIngestQueue, create_celery_app
from perimeter.retrieval.answer import AnswerService
from perimeter.retrieval.conversation import ConversationRewriter
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
    store: ChunkStore
    retriever: Retriever
    answers: AnswerService
    # A re-indexed generation's own chunking (max_tokens, overlap; None: the knowledge base's).
    chunking: tuple[int | None, int | None] | None = None

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
        self._lock = threading.RLock()
        # Zero-downtime re-index (perimeter.ingest.reindex): which generation serves a profile,
        # and how to build a generation's profile (its collection with its model). Unset: every
        # profile is served by its configured collection.
        self.serving: Callable[[str], Generation] | None = None
        self.build_generation: Callable[[Generation], EmbeddingProfile] | None = None
        self._generations: dict[Generation, EmbeddingProfile] = {}

    @property
    def names(self) -> list[str]:
        return sorted(self._names)

    def base_generation(self, name: str) -> Generation:
        """The generation a profile has before any re-index: its configured collection."""
        return Generation(self.configured(name).store.collection, name)

    def generation(self, gen: Generation) -> EmbeddingProfile:
        """The profile that reads (and writes) one generation's collection, built once."""
        if gen == self.base_generation(gen.embedding) or self.build_generation is None:
            return self.configured(gen.embedding)
        found = self._generations.get(gen)
        if found is not None:
            return found
        with self._lock:
            if gen not in self._generations:
                self._generations[gen] = self.build_generation(gen)
            return self._generations[gen]

    def get(self, name: str) -> EmbeddingProfile:
        """The profile that serves ``name`` now: its configured one, or the generation a
        re-index switched it to. Raises LookupError for a profile the settings do not define."""
        configured = self.configured(name)
        if self.serving is None:
            return configured
        return self.generation(self.serving(name))

    def close_generations(self) -> None:
        for profile in self._generations.values():
            profile.store.close()

    def configured(self, name: str) -> EmbeddingProfile:
        """The profile as configured (its own collection), whatever a re-index switched."""
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
    # Concrete on purpose: the SQL-backed repositories (API keys, audit, conversations, ACL
    # listings, re-index state) share its engine. Services take the MetadataStore Protocol.
    metadata: SqlMetadataStore
    blobs: BlobStorage
    store: ChunkStore  # the default profile's collection; other profiles are its siblings
    parser: UnstructuredParser
    llm: OpenAICompatibleLLM
    ingestion: IngestionService
    queue: IngestQueue
    keys: ApiKeyStore
    audit: AuditLog
    auth: Authenticator
    profiles: ProfileRegistry
    kbs: KnowledgeBases
    router: ModelRouter
    tracing: Tracing  # OpenTelemetry: a NoOp tracer unless tracing.enabled
    conversations: SqlConversationStore  # server-side conversations, in the metadata DB
    rewriter: ConversationRewriter  # follow-up question -> standalone search query
    reindex: ReindexService | None = None  # zero-downtime re-index (perimeter.ingest.reindex)

    def ensure_ready(self) -> None:
        """Create what must exist (schema, collection). Loads the embedder to learn its size.
        An embedded local-mode folder left by an older version is first migrated into Qdrant
        Edge (README, "Upgrading the embedded vector store")."""
        self.metadata.create_schema()
        migrate_embedded_store(self.settings, self.store)
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

    def unsupported_policy(self, kb: KnowledgeBase) -> str:
        """What this knowledge base's answers do with unsupported sentences (the collection's
        own setting, else the deployment's)."""
        return kb.unsupported_policy or self.settings.answers.unsupported_policy

    def close(self) -> None:
        if self.reindex is not None:
            self.reindex.stop_all()
        self.profiles.close_generations()
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
            queries=e.micro_batch_queries,
            max_query_batch=e.micro_batch_query_max,
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
    torch_embedder: Callable[..., Embedder] = SentenceTransformerEmbedder
    if e.kind == "bge-m3":
        from perimeter.backends.bge_m3 import BgeM3Embedder

        torch_embedder = BgeM3Embedder
    return torch_embedder(
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


def build_llm(settings: Settings) -> OpenAICompatibleLLM:
    """The deployment's LLM client (vLLM in production, the embedded server by default)."""
    return OpenAICompatibleLLM(
        base_url=llm_base_url(settings),
        model=settings.llm.model,
        api_key=settings.llm.api_key.get_secret_value(),
        timeout_s=settings.llm.timeout_s,
        max_retries=settings.llm.max_retries,
        max_tokens=settings.llm.max_tokens,
        temperature=settings.llm.temperature,
    )


def build_chunk_store(settings: Settings) -> ChunkStore:
    """qdrant.url set: the Qdrant server. Unset: the embedded engine (qdrant.embedded), Qdrant
    Edge by default, qdrant-client local mode on request. Opens nothing yet."""
    data_dir = settings.storage.data_dir
    if settings.qdrant.url is None and settings.qdrant.embedded == "edge":
        return QdrantEdgeChunkStore(
            collection=settings.qdrant.collection,
            root=edge_store_root(settings),
            fusion=settings.retrieval.fusion,
            rrf_k=settings.retrieval.rrf_k,
            dense_weight=settings.retrieval.dense_weight,
            sparse_weight=settings.retrieval.sparse_weight,
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
        cluster=ClusterLayout(
            shard_number=settings.qdrant.shard_number,
            replication_factor=settings.qdrant.replication_factor,
            write_consistency_factor=settings.qdrant.write_consistency_factor,
            read_consistency=settings.qdrant.read_consistency,
        ),
    )
    return store


def edge_store_root(settings: Settings) -> Path:
    """Where the embedded Qdrant Edge store keeps one shard folder per collection."""
    return settings.storage.data_dir / "qdrant_edge"


def migrate_embedded_store(settings: Settings, store: ChunkStore) -> None:
    """Copy a local-mode folder (``<data_dir>/qdrant``, the embedded store before Qdrant Edge)
    into the Edge store, once. Runs before the store is first opened; a no-op otherwise."""
    legacy = settings.storage.data_dir / "qdrant"
    if settings.qdrant.url is not None or settings.qdrant.embedded != "edge":
        return
    if not legacy.is_dir() or not isinstance(store, QdrantEdgeChunkStore):
        return
    from perimeter.backends.edge_migration import migrate_local_to_edge

    migrate_local_to_edge(legacy, store)


def served_models_of(llm: OpenAICompatibleLLM) -> Callable[[], list[str] | None]:
    """What the LLM server serves, asked at each collection creation (rare; a few ms), so an
    adapter added to vLLM needs no Perimeter restart. None: the server cannot be asked."""

    def served() -> list[str] | None:
        try:
            return llm.served_models()
        except LLMUnavailable:
            return None

    return served


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
    metadata = SqlMetadataStore(settings.database_url)
    blobs = BlobStore(settings.storage.blobs_dir)
    llm = llm or build_llm(settings)
    reranker = (
        CrossEncoderReranker(settings.retrieval.reranker_model, device=settings.embedding.device)
        if settings.retrieval.reranker_model
        else None
    )
    store = build_chunk_store(settings)

    def build_profile(
        name: str, given: Embedder | None = None, collection: str | None = None
    ) -> EmbeddingProfile:
        """``collection``: a re-index generation's collection instead of the profile's own."""
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
                min_word_chars=settings.retrieval.bm25_min_word_chars,
            )
        )
        profile_store = (
            store.sibling(collection)
            if collection is not None
            else store
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
            feedback_chunks=settings.retrieval.feedback_chunks,
            feedback_terms=settings.retrieval.feedback_terms,
            feedback_original_weight=settings.retrieval.feedback_original_weight,
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
                verifier_threshold=settings.answers.verifier_threshold,
                llm_verification=settings.answers.llm_verification,
                llm_verification_model=settings.answers.llm_verification_model,
            ),
        )
        if name != DEFAULT_PROFILE or collection is not None:
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
        served_models=served_models_of(llm) if settings.llm.check_models else None,
    )

    def target_for(doc: DocumentRecord) -> IndexTarget:
        kb = kbs.get(doc.tenant_id, doc.kb)
        if kb is None:
            raise LookupError(f"knowledge base {doc.kb!r} of tenant {doc.tenant_id!r}")
        return index_target(profiles.get(kb.embedding_profile), kb)

    def index_target(profile: EmbeddingProfile, kb: KnowledgeBase) -> IndexTarget:
        max_tokens, overlap = kbs.chunking(kb)
        if profile.chunking is not None and profile.chunking[0] is not None:
            # A re-index with its own chunking: it applies to every knowledge base it covers.
            max_tokens = profile.chunking[0]
            overlap = overlap_tokens_for(
                max_tokens, profile.chunking[1], settings.chunking.overlap_tokens
            )
        return IndexTarget(
            profile.embedder, profile.sparse_encoder, profile.store, max_tokens, overlap
        )

    def build_generation(gen: Generation) -> EmbeddingProfile:
        model = profiles.configured(gen.embedding)  # shares the loaded model
        profile = build_profile(gen.embedding, model.embedder, collection=gen.collection)
        profile.chunking = (gen.chunk_max_tokens, gen.chunk_overlap_tokens)
        return profile

    def generation_target(doc: DocumentRecord, gen: Generation) -> IndexTarget:
        kb = kbs.get(doc.tenant_id, doc.kb)
        if kb is None:
            raise LookupError(f"knowledge base {doc.kb!r} of tenant {doc.tenant_id!r}")
        return index_target(profiles.generation(gen), kb)

    def profile_of(doc: DocumentRecord) -> str:
        kb = kbs.get(doc.tenant_id, doc.kb)
        return kb.embedding_profile if kb is not None else DEFAULT_PROFILE

    ocr = (
        RapidOcrEngine(
            languages=settings.parser.ocr_languages,
            threads=settings.parser.ocr_threads,
            min_confidence=settings.parser.ocr_min_confidence,
            # Pages rendered at ocr_dpi are read at it, not scaled down to RapidOCR's default.
            max_side=max_side_for(settings.parser.ocr_dpi),
        )
        if settings.parser.ocr_enabled
        else None
    )
    parser = UnstructuredParser(
        pdf_strategy=settings.parser.pdf_strategy,
        ocr=ocr,
        ocr_dpi=settings.parser.ocr_dpi,
        ocr_time_limit_s=settings.parser.timeout_s,
    )
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
        max_document_chars=settings.chunking.max_document_chars,
        max_chunks=settings.chunking.max_chunks_per_document,
    )
    reindex = ReindexService(
        ReindexStateStore(metadata),
        ingestion,
        ReindexTools(
            base_generation=profiles.base_generation,
            profiles=lambda: profiles.names,
            store_for=lambda gen: profiles.generation(gen).store,
            target_for=generation_target,
            profile_of=profile_of,
        ),
        batch_documents=settings.reindex.batch_documents,
        max_documents_per_s=settings.reindex.max_documents_per_s,
        yield_to_ingest_s=settings.reindex.yield_to_ingest_s,
        concurrency=settings.reindex.concurrency,
    )
    profiles.build_generation = build_generation
    profiles.serving = reindex.serving_generation
    ingestion.mirror = reindex
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
        reindex=reindex,
        conversations=SqlConversationStore(metadata),
        rewriter=ConversationRewriter(
            llm,
            use_llm=(
                settings.conversation.llm_rewrite
                if settings.conversation.llm_rewrite is not None
                else settings.llm.base_url is not None
            ),
            max_history_turns=settings.conversation.max_history_turns,
            max_tokens=settings.conversation.rewrite_max_tokens,
            history_weight=settings.conversation.history_weight,
            split_sides=settings.conversation.split_sides,
            own_terms_share=settings.conversation.own_terms_share,
        ),
    )
