"""Grounded answers: retrieve, abstain when nothing relevant, ask the LLM, verify citations."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.trace import NoOpTracer, Span, StatusCode, Tracer

from perimeter.backends.errors import LLMContextExceeded
from perimeter.backends.protocols import LLM, Embedder
from perimeter.domain import Completion, ScoredChunk, SearchFilter, Usage
from perimeter.retrieval.citations import Attribution, SentenceSupport, attribute
from perimeter.retrieval.llm_check import llm_recheck
from perimeter.retrieval.prompt import NOT_FOUND, build_messages
from perimeter.retrieval.search import NO_CONTEXT, Mode, RetrievalResult, Retriever, SearchContext
from perimeter.retrieval.verifier import DEFAULT_THRESHOLD, CachedEmbed, ClaimVerifier

SNIPPET_CHARS = 300
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Citation:
    n: int
    document_id: str
    filename: str
    page: int | None
    section: str | None
    snippet: str
    score: float
    ocr_confidence: float | None = None  # the chunk's, when it was read from a scan


@dataclass(slots=True)
class Answer:
    answer: str
    citations: list[Citation]
    sources: list[Citation]
    grounded: bool
    unsupported_sentences: list[str]
    invalid_citations: list[int]
    abstained: bool
    usage: Usage
    timings: dict[str, float] = field(default_factory=dict)
    degraded: bool = False
    model: str | None = None  # the LLM that wrote it; None when it abstained without one
    # Per-sentence verdicts of the claim verifier (perimeter.retrieval.verifier), and what the
    # unsupported-content policy (perimeter.retrieval.policy) did with them.
    sentences: list[SentenceSupport] = field(default_factory=list)
    policy: str = "annotate"
    redacted_sentences: list[str] = field(default_factory=list)
    refused: bool = False


def result_timings(result: RetrievalResult) -> dict[str, float]:
    timings = {"embed_ms": round(result.embed_ms, 2), "search_ms": round(result.search_ms, 2)}
    if result.rerank_ms:
        timings["rerank_ms"] = round(result.rerank_ms, 2)
    return timings


def _snippet(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= SNIPPET_CHARS else text[: SNIPPET_CHARS - 1].rstrip() + "…"


def citation_of(n: int, chunk: ScoredChunk) -> Citation:
    return Citation(
        n=n,
        document_id=chunk.document_id,
        filename=chunk.filename,
        page=chunk.page,
        section=chunk.section,
        snippet=_snippet(chunk.text),
        score=round(chunk.score, 6),
        ocr_confidence=chunk.ocr_confidence,
    )


class AnswerService:
    def __init__(
        self,
        retriever: Retriever,
        llm: LLM,
        embedder: Embedder | None,
        min_dense_score: float,
        max_tokens: int,
        tracer: Tracer = NoOpTracer(),
        verifier_threshold: float | None = DEFAULT_THRESHOLD,
        llm_verification: bool = False,
        llm_verification_model: str | None = None,
    ) -> None:
        self._retriever = retriever
        self._verifier_threshold = verifier_threshold
        self._cached_embed: CachedEmbed | None = None
        self._llm_verification = llm_verification
        self._llm_verification_model = llm_verification_model
        self._llm = llm
        self._embedder = embedder
        self._min_dense_score = min_dense_score
        self._max_tokens = max_tokens
        self._tracer = tracer  # perimeter.tracing: llm.complete / llm.stream spans

    def _llm_attributes(self, model: str | None, sources: int) -> dict[str, str | int]:
        """OpenTelemetry GenAI semantic conventions (gen_ai.*) of one chat call."""
        return {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": model or self._llm.model_name,
            "gen_ai.request.max_tokens": self._max_tokens,
            "perimeter.llm.sources": sources,
        }

    @staticmethod
    def _record_completion(span: Span, completion: Completion) -> None:
        span.set_attribute("gen_ai.response.model", completion.model)
        span.set_attribute("gen_ai.usage.input_tokens", completion.usage.prompt_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", completion.usage.completion_tokens)

    def retrieve(
        self,
        question: str,
        flt: SearchFilter,
        top_k: int,
        mode: Mode = "hybrid",
        context: SearchContext = NO_CONTEXT,
    ) -> RetrievalResult:
        """``context``: a follow-up's earlier turns, searched beside it (Retriever.retrieve)."""
        return self._retriever.retrieve(question, flt, top_k, mode, context)

    def relevant(self, result: RetrievalResult, min_score: float | None) -> list[ScoredChunk]:
        """Sources worth showing the LLM. Empty means: answer 'not found' without the LLM."""
        threshold = self._min_dense_score if min_score is None else min_score
        if not result.chunks:
            return []
        if result.best_dense_score is not None and result.best_dense_score < threshold:
            return []
        return result.chunks

    def _verifier_embed(self) -> CachedEmbed | None:
        # The embedding feature matters only where the score may reject (a threshold is set);
        # otherwise the checks decide and embedding the sources would be wasted work. One cache
        # per service, made on first use (construction stays cheap).
        if self._embedder is None or self._verifier_threshold is None:
            return None
        if self._cached_embed is None:
            self._cached_embed = CachedEmbed(self._embed_fn())
        return self._cached_embed

    def _embed_fn(self) -> Any:
        if self._embedder is None:
            return None
        embedder = self._embedder
        return lambda texts: [e.dense for e in embedder.encode_documents(list(texts))]

    def _finish(
        self,
        text: str,
        sources: list[ScoredChunk],
        usage: Usage,
        timings: dict[str, float],
        model: str | None,
        question: str = "",
    ) -> Answer:
        t0 = time.perf_counter()
        # The question lets a sentence restate it without counting as new content; values in
        # it (numbers, identifiers) still have to be in the sources.
        verifier = ClaimVerifier(embed=self._verifier_embed(), threshold=self._verifier_threshold)
        attr: Attribution = attribute(text, sources, question=question, verifier=verifier)
        if self._llm_verification and not attr.abstained:
            calls = llm_recheck(attr, sources, self._llm, model=self._llm_verification_model)
            timings["llm_verification_calls"] = calls
        timings["attribution_ms"] = round((time.perf_counter() - t0) * 1000, 2)
        citations = [citation_of(n, sources[n - 1]) for n in attr.cited_sources]
        return Answer(
            answer=text,
            citations=citations,
            sources=[citation_of(i, c) for i, c in enumerate(sources, start=1)],
            grounded=attr.grounded,
            unsupported_sentences=attr.unsupported,
            invalid_citations=attr.invalid_markers,
            abstained=attr.abstained,
            usage=usage,
            timings=timings,
            model=model,
            sentences=attr.sentences,
        )

    def not_found(self, timings: dict[str, float]) -> Answer:
        return Answer(
            answer=NOT_FOUND,
            citations=[],
            sources=[],
            grounded=True,
            unsupported_sentences=[],
            invalid_citations=[],
            abstained=True,
            usage=Usage(),
            timings=timings,
        )

    def answer(
        self,
        question: str,
        flt: SearchFilter,
        top_k: int,
        min_score: float | None = None,
        mode: Mode = "hybrid",
        model: str | None = None,
    ) -> Answer:
        return self.answer_from(
            question, self.retrieve(question, flt, top_k, mode), min_score, model
        )

    def answer_from(
        self,
        question: str,
        result: RetrievalResult,
        min_score: float | None = None,
        model: str | None = None,
    ) -> Answer:
        """Answer from an existing retrieval (callers that also need the sources on error)."""
        timings = result_timings(result)
        sources = self.relevant(result, min_score)
        if not sources:
            return self.not_found(timings)
        t0 = time.perf_counter()
        while True:
            with self._tracer.start_as_current_span(
                "llm.complete", attributes=self._llm_attributes(model, len(sources))
            ) as span:
                try:
                    completion = self._llm.complete(
                        build_messages(question, sources), self._max_tokens, model=model
                    )
                except LLMContextExceeded:
                    sources = _trimmed(sources)  # raises again when one source is too many
                    span.set_attribute("perimeter.llm.context_exceeded", True)
                    continue
                self._record_completion(span, completion)
            break
        timings["llm_ms"] = round((time.perf_counter() - t0) * 1000, 2)
        return self._finish(
            completion.text, sources, completion.usage, timings, completion.model, question
        )

    def stream_answer(
        self,
        question: str,
        flt: SearchFilter,
        top_k: int,
        min_score: float | None = None,
        mode: Mode = "hybrid",
        model: str | None = None,
        search_query: str | None = None,
        context: SearchContext = NO_CONTEXT,
    ) -> tuple[RetrievalResult, Iterator[tuple[str, Any]]]:
        """Retrieval runs eagerly (so errors surface before the stream starts); the returned
        iterator yields ("token", str) events, then one ("answer", Answer). ``search_query``:
        what to retrieve with when it differs from the question (a follow-up's standalone
        form, perimeter.retrieval.conversation), ``context`` its earlier turns."""
        result = self.retrieve(search_query or question, flt, top_k, mode, context)
        timings = result_timings(result)
        sources = self.relevant(result, min_score)
        # The stream is consumed later, maybe in another thread: its span's parent is the
        # context of this call (the request), taken now.
        parent = otel_context.get_current()

        def events() -> Iterator[tuple[str, Any]]:
            if not sources:
                yield "token", NOT_FOUND
                yield "answer", self.not_found(timings)
                return
            t0 = time.perf_counter()
            parts: list[str] = []
            first_token_ms: float | None = None
            # Not made current: a generator's steps may run in different contexts.
            span = self._tracer.start_span(
                "llm.stream", parent, attributes=self._llm_attributes(model, len(sources))
            )
            shown = sources
            try:
                for token in self._stream_fitting(question, shown, model):
                    if isinstance(token, list):  # the sources that fit the context window
                        shown = token
                        continue
                    if first_token_ms is None:
                        first_token_ms = (time.perf_counter() - t0) * 1000
                        span.add_event("gen_ai.first_token")
                    parts.append(token)
                    yield "token", token
            except GeneratorExit:  # the client went away mid-answer
                span.set_attribute("perimeter.llm.cancelled", True)
                raise
            except Exception as exc:
                span.record_exception(exc)
                span.set_status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}")
                raise
            finally:
                span.set_attribute("gen_ai.usage.output_tokens", len(parts))
                span.end()
            timings["llm_ms"] = round((time.perf_counter() - t0) * 1000, 2)
            if first_token_ms is not None:
                timings["llm_first_token_ms"] = round(first_token_ms, 2)
            text = "".join(parts).strip()
            usage = Usage(completion_tokens=len(parts))
            yield (
                "answer",
                self._finish(text, shown, usage, timings, model or self._llm.model_name, question),
            )

        return result, events()

    def _stream_fitting(
        self, question: str, sources: list[ScoredChunk], model: str | None
    ) -> Iterator[str | list[ScoredChunk]]:
        """The LLM's tokens, with fewer sources while the prompt overflows the context window.

        The server refuses an oversized prompt before it writes a token, so a retry never
        repeats text; a list item (the sources finally sent) comes before the first token
        whenever sources were trimmed."""
        while True:
            tokens = self._llm.stream(
                build_messages(question, sources), self._max_tokens, model=model
            )
            try:
                first = next(tokens, None)
            except LLMContextExceeded:
                sources = _trimmed(sources)
                yield sources
                continue
            if first is not None:
                yield first
                yield from tokens
            return


def _trimmed(sources: list[ScoredChunk]) -> list[ScoredChunk]:
    """The better-ranked half of the sources, for a prompt that overflowed the context window.

    Halving needs only log2(top_k) refused requests (each costs the server a tokenization, not a
    generation). Already down to one source: the question itself is too long for this model, and
    LLMContextExceeded goes up to the caller (a clear 4xx)."""
    if len(sources) <= 1:
        raise LLMContextExceeded(
            "the question with even one source does not fit the model's context window"
        )
    keep = len(sources) // 2
    log.warning("prompt over the LLM's context window: %d sources -> %d", len(sources), keep)
    return sources[:keep]
