"""Our own vocabulary. Backends speak these types; no Qdrant/OpenAI/unstructured type leaks out."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# Fixed namespace: point and document ids are uuid5 of it, so every re-run computes the same ids.
ID_NAMESPACE = uuid.UUID("3f1c7a52-6d0e-4a8b-9a57-5e2b1c0f4d11")

DEFAULT_TENANT = "default"
# Every tenant has this knowledge base without creating it: uploads and questions that name
# none go there.
DEFAULT_KB = "default"


def document_id_for(tenant_id: str, content_hash: str, kb: str = DEFAULT_KB) -> str:
    """Same bytes uploaded twice by one tenant into one knowledge base are one document; the
    same bytes in two knowledge bases are two (each is chunked and embedded its own way)."""
    # The default knowledge base keeps the ids documents had before knowledge bases existed.
    scope = tenant_id if kb == DEFAULT_KB else f"{tenant_id}:{kb}"
    key = f"doc:{scope}:{content_hash}"
    return uuid.uuid5(ID_NAMESPACE, key).hex


def mean_ocr_confidence(pieces: Iterable[tuple[str, float | None]]) -> float | None:
    """Character-weighted mean of the confidences of the (text, confidence) pieces read by OCR,
    rounded to 4 places; None when none was. Weighting by characters keeps a one-word line read
    at 0.6 from counting as much as a paragraph read at 0.98."""
    weighted = [(c, len(t)) for t, c in pieces if c is not None]
    chars = sum(n for _, n in weighted)
    if not chars:
        return None
    return round(sum(c * n for c, n in weighted) / chars, 4)


def point_id_for(document_id: str, chunk_index: int) -> str:
    """Deterministic chunk point id: a re-run of a task overwrites, never duplicates."""
    return str(uuid.uuid5(ID_NAMESPACE, f"chunk:{document_id}:{chunk_index}"))


class DocumentStatus(enum.StrEnum):
    QUEUED = "queued"
    PARSING = "parsing"
    EMBEDDING = "embedding"
    INDEXED = "indexed"
    FAILED = "failed"


# A document in one of these states will not change again until it is re-uploaded or re-indexed.
FINAL_DOCUMENT_STATUSES: frozenset[str] = frozenset(
    {DocumentStatus.INDEXED.value, DocumentStatus.FAILED.value}
)


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class ParsedElement:
    """One structural element out of a parser: a title, a paragraph, a list item, a table."""

    text: str
    category: str  # "Title", "NarrativeText", "ListItem", "Table", ...
    page: int | None = None
    # A "Table"'s name (its caption, the heading above it, or the sheet name): every chunk of
    # the table repeats it with the header row, so a cell found alone still says what it is.
    caption: str | None = None
    # Mean recognition confidence (0..1) when the text came from OCR; None for a text layer.
    ocr_confidence: float | None = None


@dataclass(frozen=True, slots=True)
class ParsedDocument:
    elements: list[ParsedElement]
    pages: int | None = None
    # Pages (1-based) whose text came from OCR, and their character-weighted mean confidence.
    ocr_pages: tuple[int, ...] = ()
    ocr_confidence: float | None = None


@dataclass(frozen=True, slots=True)
class OcrLine:
    """One line of recognised text, with its box in page pixels (x0, y0, x1, y1)."""

    text: str
    confidence: float
    box: tuple[float, float, float, float]


@dataclass(frozen=True, slots=True)
class OcrPage:
    """What an OCR engine read on one page image, in reading order."""

    lines: list[OcrLine]
    width: int
    height: int

    @property
    def confidence(self) -> float | None:
        """Character-weighted mean line confidence; None when nothing was read."""
        chars = sum(len(line.text) for line in self.lines)
        if not chars:
            return None
        return sum(line.confidence * len(line.text) for line in self.lines) / chars


@dataclass(frozen=True, slots=True)
class Chunk:
    index: int
    text: str
    page: int | None
    section: str | None
    token_count: int
    # Character-weighted mean OCR confidence (0..1) of the chunk's text when it was read from a
    # page image; None for text from a text layer. A reader of a citation can tell a scan's
    # doubtful reading ("1,250" or "1,260"?) from the document's own text.
    ocr_confidence: float | None = None


@dataclass(frozen=True, slots=True)
class SparseVector:
    indices: list[int]
    values: list[float]


@dataclass(frozen=True, slots=True)
class EncodedText:
    dense: list[float]
    sparse: SparseVector | None = None


@dataclass(frozen=True, slots=True)
class ContextQuery:
    """A further query fused into a hybrid search beside the main one (a follow-up's earlier
    turn): its vectors and its weight relative to the main query's lists."""

    dense: list[float]
    sparse: SparseVector | None
    weight: float


def fusion_queries(
    dense: list[float],
    sparse: SparseVector | None,
    context: Sequence[ContextQuery],
    fusion: str,
) -> list[ContextQuery]:
    """The queries a hybrid search fuses: the main one at weight 1, then the context queries.

    Only RRF takes per-list weights; DBSF would fuse an earlier turn's lists as strongly as the
    question's own, so under DBSF the main query is searched alone. A context query of weight
    0 or less adds nothing and is left out."""
    main = ContextQuery(dense, sparse, 1.0)
    if fusion != "rrf":
        return [main]
    return [main, *(q for q in context if q.weight > 0)]


@dataclass(slots=True)
class ChunkRecord:
    """A chunk as stored: vectors plus the payload every answer needs for its citations."""

    point_id: str
    tenant_id: str
    document_id: str
    chunk_index: int
    text: str
    filename: str
    page: int | None
    section: str | None
    dense: list[float]
    sparse: SparseVector | None
    metadata: dict[str, Any] = field(default_factory=dict)
    groups: list[str] = field(default_factory=list)
    kb: str = DEFAULT_KB
    ocr_confidence: float | None = None  # as ``Chunk.ocr_confidence``


@dataclass(frozen=True, slots=True)
class SearchFilter:
    """What the caller may narrow to. The tenant is always applied by the service, never widened."""

    tenant_id: str
    document_ids: list[str] | None = None
    filenames: list[str] | None = None
    metadata: dict[str, Any] | None = None
    groups: list[str] | None = None  # caller's groups; None = no group restriction
    # metadata field -> (gte, lte) ISO-8601 datetimes, either bound optional
    date_ranges: dict[str, tuple[str | None, str | None]] | None = None
    kb: str | None = None  # knowledge base; None = any (deletes by document id)


@dataclass(frozen=True, slots=True)
class ScoredChunk:
    point_id: str
    document_id: str
    chunk_index: int
    text: str
    filename: str
    page: int | None
    section: str | None
    score: float
    dense_score: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    ocr_confidence: float | None = None  # as ``Chunk.ocr_confidence``


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    model: str
    usage: Usage


@dataclass(slots=True)
class DocumentRecord:
    id: str
    tenant_id: str
    content_hash: str
    filename: str
    content_type: str
    size_bytes: int
    status: DocumentStatus
    error: str | None
    chunk_count: int
    pages: int | None
    metadata: dict[str, Any]
    attempts: int
    created_at: datetime
    updated_at: datetime
    groups: list[str] = field(default_factory=list)
    kb: str = DEFAULT_KB
    # Pages (1-based) whose text came from OCR, and the character-weighted mean confidence of
    # that text (0..1; None when no page was OCR'd): an operator sees which scans read badly.
    ocr_pages: list[int] = field(default_factory=list)
    ocr_confidence: float | None = None


@dataclass(slots=True)
class JobRecord:
    id: str
    document_id: str
    tenant_id: str
    status: JobStatus
    error: str | None
    progress: float
    created_at: datetime
    updated_at: datetime


# What an answer's unsupported sentences become (perimeter.retrieval.policy).
UNSUPPORTED_POLICIES: tuple[str, ...] = ("annotate", "redact", "refuse")


@dataclass(frozen=True, slots=True)
class KnowledgeBase:
    """A named set of documents with its own indexing and answering settings. Unset fields
    fall back to the deployment's settings."""

    tenant_id: str
    name: str
    description: str = ""
    embedding_profile: str = "default"
    chunk_max_tokens: int | None = None
    chunk_overlap_tokens: int | None = None
    llm_model: str | None = None  # a model or LoRA adapter name on the OpenAI-compatible server
    sensitivity: str | None = None  # a label routing rules can match ("restricted", ...)
    created_at: datetime | None = None
    # annotate | redact | refuse (perimeter.retrieval.policy); None: the deployment's setting
    unsupported_policy: str | None = None


@dataclass(frozen=True, slots=True)
class ConversationTurnRecord:
    """One question of a stored conversation: what was asked, the standalone query it was
    searched with, and the response shown (the /v1/query body, so a client can redraw it)."""

    seq: int
    question: str
    search_query: str
    rewrite_method: str  # "none" | "carry" | "llm"
    response: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ConversationRecord:
    """A conversation belongs to one caller (tenant + actor) and one knowledge base."""

    id: str
    tenant_id: str
    actor: str
    kb: str
    title: str
    created_at: datetime
    updated_at: datetime
    turn_count: int = 0
    turns: list[ConversationTurnRecord] = field(default_factory=list)
