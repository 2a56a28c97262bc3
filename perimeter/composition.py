"""The one place that turns settings into services. FastAPI's lifespan, the Celery worker and the
CLI all call :func:`build_services`; nothing else constructs backends."""

from __future__ import annotations

from dataclasses import dataclass

from perimeter.audit import AuditLog
from perimeter.auth.api_keys import ApiKeyStore
from perimeter.auth.service import Authenticator
from perimeter.backends.blob_store import BlobStore
from perimeter.backends.bm25_sparse import Bm25SparseEncoder
from perimeter.backends.cross_encoder_reranker import CrossEncoderReranker
from perimeter.backends.model_paths import force_offline
from perimeter.backends.openai_llm import OpenAICompatibleLLM
from perimeter.backends.protocols import Embedder, SparseEncoder
from perimeter.backends.qdrant_store import QdrantChunkStore
from perimeter.backends.sentence_transformer_embedder import SentenceTransformerEmbedder
from perimeter.backends.sql_metadata import SqlMetadataStore
from perimeter.backends.unstructured_parser import UnstructuredParser
from perimeter.ingest.pipeline import IngestionService
from perimeter.queueing import CeleryIngestQueue, create_celery_app
from perimeter.retrieval.answer import AnswerService
from perimeter.retrieval.search import Retriever
from perimeter.settings import Settings


@dataclass
class Services:
    settings: Settings
    metadata: SqlMetadataStore
    blobs: BlobStore
    embedder: Embedder
    sparse_encoder: SparseEncoder | None
    store: QdrantChunkStore
    parser: UnstructuredParser
    llm: OpenAICompatibleLLM
    retriever: Retriever
    answers: AnswerService
    ingestion: IngestionService
    queue: CeleryIngestQueue
    keys: ApiKeyStore
    audit: AuditLog
    auth: Authenticator

    def ensure_ready(self) -> None:
        """Create what must exist (schema, collection). Loads the embedder to learn its size."""
        self.metadata.create_schema()
        self.store.ensure_collection(
            self.embedder.dimension,
            sparse_idf=self.sparse_encoder is not None and self.sparse_encoder.uses_idf_modifier,
        )
        for key in self.settings.retrieval.indexed_metadata_fields:
            self.store.create_metadata_index(key)

    def close(self) -> None:
        self.store.close()
        self.metadata.close()


def build_embedder(settings: Settings) -> Embedder:
    e = settings.embedding
    if e.kind == "bge-m3":
        from perimeter.backends.bge_m3 import BgeM3Embedder

        return BgeM3Embedder(
            model=e.model,
            device=e.device,
            batch_size=e.batch_size,
            max_seq_length=e.max_seq_length,
        )
    return SentenceTransformerEmbedder(
        model=e.model,
        device=e.device,
        batch_size=e.batch_size,
        max_seq_length=e.max_seq_length,
        query_prefix=e.query_prefix,
        document_prefix=e.document_prefix,
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
    data_dir = settings.storage.data_dir
    metadata = SqlMetadataStore(settings.database_url)
    blobs = BlobStore(settings.storage.blobs_dir)
    embedder = embedder or build_embedder(settings)
    # A model with its own learned sparse head (BGE-M3) needs no lexical encoder.
    sparse: SparseEncoder | None = (
        None
        if settings.embedding.kind == "bge-m3"
        else Bm25SparseEncoder(
            k1=settings.retrieval.bm25_k1,
            b=settings.retrieval.bm25_b,
            avg_len=settings.retrieval.bm25_avg_len,
        )
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
    parser = UnstructuredParser(pdf_strategy=settings.parser.pdf_strategy)
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
    retriever = Retriever(
        embedder,
        store,
        sparse,
        prefetch_limit=settings.retrieval.prefetch_limit,
        reranker=reranker,
        rerank_candidates=settings.retrieval.rerank_candidates,
    )
    answers = AnswerService(
        retriever,
        llm,
        embedder,
        min_dense_score=settings.retrieval.min_dense_score,
        max_tokens=settings.llm.max_tokens,
    )
    ingestion = IngestionService(
        metadata=metadata,
        blobs=blobs,
        parser=parser,
        embedder=embedder,
        sparse_encoder=sparse,
        store=store,
        max_tokens=settings.chunking.max_tokens,
        overlap_tokens=settings.chunking.overlap_tokens,
        embed_batch_size=settings.embedding.batch_size,
        max_attempts=settings.broker.max_attempts,
    )
    queue = CeleryIngestQueue(create_celery_app(settings), settings.broker.queue)
    # Keys and the audit log live in the metadata DB and share its engine.
    keys = ApiKeyStore(metadata)
    auth = Authenticator.from_settings(settings.auth, keys)
    return Services(
        settings=settings,
        metadata=metadata,
        blobs=blobs,
        embedder=embedder,
        sparse_encoder=sparse,
        store=store,
        parser=parser,
        llm=llm,
        retriever=retriever,
        answers=answers,
        ingestion=ingestion,
        queue=queue,
        keys=keys,
        audit=AuditLog(metadata),
        auth=auth,
    )
