"""Request and response bodies of the public API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from perimeter.domain import DEFAULT_KB, DocumentRecord, JobRecord
from perimeter.text_safety import scrub


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class DocumentOut(BaseModel):
    id: str
    filename: str
    content_type: str
    size_bytes: int
    status: str
    error: str | None
    chunk_count: int
    pages: int | None
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    collection: str = DEFAULT_KB
    ocr_pages: list[int] = Field(
        default_factory=list,
        description="Pages (1-based) whose text was read by OCR: image uploads and PDF pages "
        "without a text layer.",
    )
    ocr_confidence: float | None = Field(
        default=None,
        description="Mean OCR confidence (0..1, weighted by characters) over those pages; null "
        "when no page was OCR'd.",
    )

    @classmethod
    def of(cls, d: DocumentRecord) -> DocumentOut:
        # scrub: a value stored before text was checked at the door must not make the whole
        # listing unserialisable (perimeter/text_safety.py).
        return cls(
            id=d.id,
            filename=scrub(d.filename),
            content_type=d.content_type,
            size_bytes=d.size_bytes,
            status=d.status.value,
            error=scrub(d.error),
            chunk_count=d.chunk_count,
            pages=d.pages,
            metadata=scrub(d.metadata),
            collection=d.kb,
            created_at=d.created_at,
            updated_at=d.updated_at,
            ocr_pages=d.ocr_pages,
            ocr_confidence=d.ocr_confidence,
        )


class JobOut(BaseModel):
    id: str
    document_id: str
    status: str
    progress: float
    error: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, j: JobRecord) -> JobOut:
        return cls(
            id=j.id,
            document_id=j.document_id,
            status=j.status.value,
            progress=round(j.progress, 4),
            error=j.error,
            created_at=j.created_at,
            updated_at=j.updated_at,
        )


class UploadedOut(BaseModel):
    document_id: str
    job_id: str
    filename: str
    status: str
    duplicate: bool = Field(description="True when this content was already uploaded.")


class UploadResponse(BaseModel):
    documents: list[UploadedOut]


class DocumentList(BaseModel):
    documents: list[DocumentOut]
    limit: int
    offset: int


class DateRange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gte: datetime | None = None
    lte: datetime | None = None


class QueryFilters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    document_ids: list[str] | None = Field(default=None, max_length=1000)
    filenames: list[str] | None = Field(default=None, max_length=1000)
    metadata: dict[str, str | int | float | bool | list[str]] | None = None
    date_ranges: dict[str, DateRange] | None = Field(
        default=None,
        description="Metadata fields holding ISO-8601 dates, e.g. "
        '{"published": {"gte": "2024-01-01T00:00:00Z"}}.',
    )


class QueryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, max_length=4000)
    collection: str = Field(
        default=DEFAULT_KB, max_length=64, description="Knowledge base to ask; default: 'default'."
    )
    top_k: int = Field(default=5, ge=1, le=50)
    filters: QueryFilters | None = None
    stream: bool = False
    mode: Literal["hybrid", "dense", "sparse"] = "hybrid"
    min_score: float | None = Field(
        default=None,
        ge=-1.0,
        le=1.0,
        description="Abstain (answer 'not found' without the LLM) below this dense similarity.",
    )
    retrieval_only: bool = Field(default=False, description="Return sources, no LLM call.")
    conversation_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="A conversation of yours (POST /v1/conversations): the question is read as a "
        "follow-up of its earlier turns, and this turn is appended to it.",
    )
    allow_degraded: bool = Field(
        default=False,
        description="If the LLM is unavailable, answer 200 with the sources and degraded=true "
        "instead of a 503.",
    )

    @field_validator("question")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("question is blank")
        return v


class CitationOut(BaseModel):
    n: int
    document_id: str
    filename: str
    page: int | None
    section: str | None
    snippet: str
    score: float
    ocr_confidence: float | None = Field(
        default=None,
        description="Mean OCR confidence (0..1) of the cited text when it was read from a scanned "
        "page or an image; null for text from a text layer.",
    )


class UsageOut(BaseModel):
    prompt_tokens: int
    completion_tokens: int


class SentenceVerdictOut(BaseModel):
    """The verifier's verdict on one sentence of the answer as the model wrote it."""

    sentence: str
    supported: bool
    checked: bool = Field(
        description="False for a sentence that asserts nothing (a preamble, an abstention)."
    )
    sources: list[int] = Field(description="Source numbers that back the sentence.")
    wrong_markers: list[int] = Field(
        description="[n] markers the model wrote to sources that do not back the sentence."
    )
    reasons: list[str] = Field(description="Why it is unsupported (empty when supported).")
    score: float = Field(description="Estimated probability the sentence is supported.")


class QueryResponse(BaseModel):
    answer: str | None
    citations: list[CitationOut]
    sources: list[CitationOut]
    grounded: bool | None
    unsupported_sentences: list[str]
    invalid_citations: list[int]
    abstained: bool
    degraded: bool = False
    usage: UsageOut
    timings: dict[str, float]
    model: str | None = Field(
        default=None, description="The LLM that wrote the answer (routing); null if none did."
    )
    conversation_id: str | None = Field(
        default=None, description="The conversation this turn was appended to, if any."
    )
    search_query: str | None = Field(
        default=None,
        description="What retrieval searched for when it differs from the question: the "
        "follow-up rewritten as a standalone query.",
    )
    sentences: list[SentenceVerdictOut] = Field(
        default_factory=list, description="Per-sentence verdicts of the model's answer."
    )
    unsupported_policy: str | None = Field(
        default=None,
        description="What was done with unsupported sentences: annotate, redact or refuse.",
    )
    redacted_sentences: list[str] = Field(
        default_factory=list, description="Sentences removed from the answer (redact/refuse)."
    )
    refused: bool = Field(
        default=False,
        description="The answer was withheld because the sources do not support it.",
    )


class CollectionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, description="a-z, 0-9, '-', '_'")
    description: str = Field(default="", max_length=2000)
    embedding_profile: str = Field(
        default="default",
        max_length=64,
        description="An embedding profile of this deployment (GET /v1/collections lists them).",
    )
    chunk_max_tokens: int | None = Field(default=None, ge=16, le=8192)
    chunk_overlap_tokens: int | None = Field(default=None, ge=0, le=4096)
    llm_model: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        description="Model or LoRA adapter name on the LLM server that answers this collection.",
    )
    sensitivity: str | None = Field(
        default=None, min_length=1, max_length=64, description="Label routing rules can match."
    )
    unsupported_policy: Literal["annotate", "redact", "refuse"] | None = Field(
        default=None,
        description="What answers' unsupported sentences become in this collection: 'annotate' "
        "(marked), 'redact' (dropped, said so) or 'refuse' (no answer). Unset: the deployment's "
        "PERIMETER_ANSWERS__UNSUPPORTED_POLICY.",
    )


class CollectionOut(BaseModel):
    name: str
    description: str
    embedding_profile: str
    chunk_max_tokens: int
    chunk_overlap_tokens: int
    llm_model: str | None
    sensitivity: str | None
    unsupported_policy: str  # the policy in force (the collection's, else the deployment's)
    document_count: int
    created_at: datetime | None


class CollectionList(BaseModel):
    collections: list[CollectionOut]
    embedding_profiles: list[str]


class ConversationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    collection: str = Field(
        default=DEFAULT_KB, max_length=64, description="Knowledge base the conversation asks."
    )
    title: str = Field(
        default="", max_length=200, description="Empty: the first question becomes the title."
    )


class ConversationTurnOut(BaseModel):
    seq: int
    question: str
    search_query: str
    rewrite_method: str = Field(description="'none', 'carry' (deterministic) or 'llm'.")
    response: dict[str, Any] = Field(description="The /v1/query response of this turn.")
    created_at: datetime


class ConversationOut(BaseModel):
    id: str
    collection: str
    title: str
    turn_count: int
    created_at: datetime
    updated_at: datetime
    turns: list[ConversationTurnOut] | None = Field(
        default=None, description="The turns, oldest first (GET of one conversation only)."
    )


class ConversationList(BaseModel):
    conversations: list[ConversationOut]
    limit: int
    offset: int
