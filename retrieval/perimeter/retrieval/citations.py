"""Citations that do not depend on the model writing them, and a groundedness verdict.

Small models (the embedded SmolLM2) often write no ``[n]`` markers. So every answer sentence is
scored against every source it was given: markers the model wrote are validated (a marker to a
source that was not provided is dropped and reported), and sentences without markers are
attributed to the sources that support them. A sentence is supported when enough of its content
words occur in a source (lexical recall) or, where an embedder is given, when it is close to the
source in embedding space.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from perimeter.domain import ScoredChunk
from perimeter.retrieval.prompt import NOT_FOUND
from perimeter.textproc import analyze

MARKER = re.compile(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")
# A marker with the space before it, so "1990 [2]." reads "1990." once the marker is gone.
_MARKER_WITH_SPACE = re.compile(r"\s*" + MARKER.pattern)


def strip_markers(text: str) -> str:
    return _MARKER_WITH_SPACE.sub("", text)


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")

ABSTAIN_PATTERNS = re.compile(
    r"(could not find|cannot find|can't find|couldn't find|not (?:found|mentioned|provided|"
    r"contained|stated) in the (?:documents|sources|context)|i don't know|i do not know|"
    r"no information|not enough information|does not (?:contain|mention|provide))",
    re.IGNORECASE,
)

# Lexical recall of a sentence's content words in a source at/above which the source supports it.
LEXICAL_SUPPORT = 0.5
# Cosine similarity (unit vectors) at/above which a source supports a sentence semantically.
SEMANTIC_SUPPORT = 0.6

EmbedFn = Callable[[Sequence[str]], list[list[float]]]


@dataclass(slots=True)
class SentenceSupport:
    sentence: str
    sources: list[int]  # 1-based source numbers supporting it
    score: float  # best support score in [0, 1]
    cited: list[int] = field(default_factory=list)  # valid markers the model wrote

    @property
    def supported(self) -> bool:
        return bool(self.sources)


@dataclass(slots=True)
class Attribution:
    cited_sources: list[int]  # 1-based, in order of first support
    sentences: list[SentenceSupport]
    invalid_markers: list[int]
    abstained: bool

    @property
    def grounded(self) -> bool:
        claims = [s for s in self.sentences if not ABSTAIN_PATTERNS.search(s.sentence)]
        return bool(claims) and all(s.supported for s in claims)

    @property
    def unsupported(self) -> list[str]:
        return [
            s.sentence
            for s in self.sentences
            if not s.supported and not ABSTAIN_PATTERNS.search(s.sentence)
        ]


def split_sentences(text: str) -> list[str]:
    parts: list[str] = []
    for line in text.splitlines():
        parts.extend(p.strip() for p in _SENTENCE_END.split(line))
    return [p for p in parts if len(analyze(strip_markers(p))) > 0]


def markers_in(sentence: str) -> list[int]:
    found: list[int] = []
    for group in MARKER.findall(sentence):
        for n in group.split(","):
            value = int(n.strip())
            if value not in found:
                found.append(value)
    return found


def is_abstention(answer: str) -> bool:
    stripped = answer.strip()
    return (
        not stripped
        or stripped == NOT_FOUND
        or bool(ABSTAIN_PATTERNS.search(stripped) and len(split_sentences(stripped)) <= 1)
    )


def lexical_recall(sentence_terms: set[str], source_terms: set[str]) -> float:
    if not sentence_terms:
        return 0.0
    return len(sentence_terms & source_terms) / len(sentence_terms)


def attribute(
    answer: str, sources: Sequence[ScoredChunk], embed: EmbedFn | None = None
) -> Attribution:
    sentences = split_sentences(answer)
    abstained = is_abstention(answer)
    source_terms = [set(analyze(s.text)) for s in sources]
    source_vecs: list[list[float]] | None = None
    sentence_vecs: list[list[float]] | None = None
    if embed is not None and sentences and sources:
        source_vecs = embed([s.text for s in sources])
        sentence_vecs = embed([strip_markers(s) for s in sentences])

    invalid: list[int] = []
    results: list[SentenceSupport] = []
    order: list[int] = []
    for i, sentence in enumerate(sentences):
        written = markers_in(sentence)
        valid = [n for n in written if 1 <= n <= len(sources)]
        invalid.extend(n for n in written if n not in valid and n not in invalid)
        terms = set(analyze(strip_markers(sentence)))
        scored: list[tuple[float, int]] = []
        for j, src_terms in enumerate(source_terms):
            score = lexical_recall(terms, src_terms)
            supported = score >= LEXICAL_SUPPORT
            if source_vecs is not None and sentence_vecs is not None:
                cos = sum(a * b for a, b in zip(sentence_vecs[i], source_vecs[j], strict=False))
                supported = supported or cos >= SEMANTIC_SUPPORT
                score = max(score, cos)
            if supported:
                scored.append((score, j + 1))
        scored.sort(reverse=True)
        support_ids = [n for _, n in scored]
        # A marker the model wrote counts only when the source really supports the sentence;
        # otherwise it is a fabricated citation and the sentence stays unsupported.
        confirmed = [n for n in valid if n in support_ids]
        if confirmed:
            chosen = confirmed
        elif support_ids:
            # Attribute to the best-supporting sources: the top one, plus any close to it.
            best = scored[0][0]
            chosen = [n for s, n in scored if s >= best - 0.05][:3]
        else:
            chosen = []
        for n in chosen:
            if n not in order:
                order.append(n)
        results.append(
            SentenceSupport(
                sentence=strip_markers(sentence).strip(),
                sources=chosen,
                score=scored[0][0] if scored else 0.0,
                cited=valid,
            )
        )
    if abstained:
        order = []
    return Attribution(
        cited_sources=order, sentences=results, invalid_markers=invalid, abstained=abstained
    )
