"""Citations that do not depend on the model writing them, and a groundedness verdict.

Small models (the embedded SmolLM2) often write no ``[n]`` markers. So every answer sentence is
checked against every source it was given by the claim verifier (``verifier.py``): what the
sentence asserts (its numbers, identifiers, names, negations, comparisons) must be in the
sources, not just its words. Markers the model wrote are validated: a marker to a source that was
not provided is dropped and reported (``invalid_markers``); a marker to a provided source that
does not back its sentence is reported per sentence (``wrong_markers``). Sentences without
markers are attributed to the sources that back them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from perimeter.domain import ScoredChunk
from perimeter.retrieval.prompt import NOT_FOUND
from perimeter.retrieval.verifier import (
    SELF_UNSUPPORTED,
    ClaimVerifier,
    EmbedFn,
    asserts_values,
    is_preamble,
)
from perimeter.textproc import analyze, sentence_spans

MARKER = re.compile(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")
# A marker with the space before it, so "1990 [2]." reads "1990." once the marker is gone.
_MARKER_WITH_SPACE = re.compile(r"\s*" + MARKER.pattern)


def strip_markers(text: str) -> str:
    return _MARKER_WITH_SPACE.sub("", text)


ABSTAIN_PATTERNS = re.compile(
    r"(could not find|cannot find|can't find|couldn't find|not (?:found|mentioned|provided|"
    r"contained|stated) in the (?:documents|sources|context|passages?)|i don't know|"
    r"i do not know|no information|not enough information|does not (?:contain|mention|provide)|"
    r"(?:passages?|sources?|documents?|context) (?:do(?:es)? not|don't|doesn't) "
    r"(?:contain|mention|provide|include|say|specify|state)|"
    # RAGTruth's refusal wording, and statements that the sources lack something: both are
    # about the sources' coverage, not claims about the world.
    r"unable to (?:answer|provide|find|determine)|"
    r"no (?:specific |further |additional |detailed |explicit )?(?:information|instructions|"
    r"details|data|mention) (?:is|are|was|were) (?:provided|given|mentioned|included|available)|"
    r"without (?:more|additional|further) (?:information|context|details))",
    re.IGNORECASE,
)

__all__ = [
    "Attribution",
    "EmbedFn",
    "SentenceSupport",
    "attribute",
    "is_abstention",
    "markers_in",
    "split_answer",
    "split_sentences",
    "strip_markers",
]


@dataclass(slots=True)
class SentenceSupport:
    sentence: str
    sources: list[int]  # 1-based source numbers backing it
    score: float  # estimated probability that the sentence is supported, in [0, 1]
    cited: list[int] = field(default_factory=list)  # valid markers the model wrote
    supported: bool = False
    checked: bool = True  # False: asserts nothing (an abstention or a preamble), not judged
    wrong_markers: list[int] = field(default_factory=list)  # cited sources that do not back it
    reasons: list[str] = field(default_factory=list)  # why it is unsupported


@dataclass(slots=True)
class Attribution:
    cited_sources: list[int]  # 1-based, in order of first support
    sentences: list[SentenceSupport]
    invalid_markers: list[int]
    abstained: bool

    @property
    def grounded(self) -> bool:
        claims = [s for s in self.sentences if s.checked]
        return bool(claims) and all(s.supported for s in claims)

    @property
    def unsupported(self) -> list[str]:
        return [s.sentence for s in self.sentences if s.checked and not s.supported]


@dataclass(frozen=True, slots=True)
class AnswerPiece:
    """One sentence of an answer: markers stripped, offsets into the original answer."""

    text: str
    start: int
    end: int
    markers: tuple[int, ...]
    skip: bool  # asserts nothing checkable: an abstention, a preamble


# A list item's marker ("2.", "b)", "*") is layout, not a claimed value.
_LIST_MARKER = re.compile(r"^(?:\d{1,2}[.)]|[a-z][.)]|\(\w{1,2}\)|[*\-\u2022]+|#+)\s+")


def split_answer(answer: str, question: str = "") -> list[AnswerPiece]:
    """``question``: what was asked; a framing sentence may restate it ("Here is the answer
    to the question "What is DNA?":") and still assert nothing."""
    pieces: list[AnswerPiece] = []
    for start, end in sentence_spans(answer):
        raw = answer[start:end]
        text = _LIST_MARKER.sub("", strip_markers(raw).strip())
        if not analyze(text):
            continue
        # "..., although this is not mentioned in the passages" asserts something first: it is
        # checked (and fails), not skipped as an abstention; so is an "abstention" that states
        # a number or identifier ("No information is given, but the code is 7492.").
        abstains = (
            bool(ABSTAIN_PATTERNS.search(text))
            and not SELF_UNSUPPORTED.search(text)
            and not asserts_values(text, question)
        )
        skip = abstains or is_preamble(text, question)
        pieces.append(AnswerPiece(text, start, end, tuple(markers_in(raw)), skip))
    return pieces


def split_sentences(text: str) -> list[str]:
    """Sentences of an answer that carry words (markers kept)."""
    return [
        text[a:b] for a, b in sentence_spans(text) if len(analyze(strip_markers(text[a:b]))) > 0
    ]


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


def attribute(
    answer: str,
    sources: Sequence[ScoredChunk],
    embed: EmbedFn | None = None,
    question: str = "",
    verifier: ClaimVerifier | None = None,
) -> Attribution:
    pieces = split_answer(answer, question)
    abstained = is_abstention(answer)
    verifier = verifier or ClaimVerifier(embed=embed)
    invalid: list[int] = []
    valid_markers: list[list[int]] = []
    for p in pieces:
        valid = [n for n in p.markers if 1 <= n <= len(sources)]
        invalid.extend(n for n in p.markers if n not in valid and n not in invalid)
        valid_markers.append(valid)
    checked = [i for i, p in enumerate(pieces) if not p.skip]
    verdicts = verifier.verify(
        [pieces[i].text for i in checked],
        [s.text for s in sources],
        question,
        [valid_markers[i] for i in checked],
    )
    by_index = dict(zip(checked, verdicts, strict=True))
    results: list[SentenceSupport] = []
    order: list[int] = []
    for i, p in enumerate(pieces):
        v = by_index.get(i)
        if v is None:
            results.append(
                SentenceSupport(p.text, [], 0.0, valid_markers[i], supported=False, checked=False)
            )
            continue
        # A marker the model wrote wins when its source really backs the sentence.
        confirmed = [n for n in v.cited if n in v.sources]
        chosen = confirmed or v.sources
        for n in chosen:
            if n not in order:
                order.append(n)
        results.append(
            SentenceSupport(
                sentence=p.text,
                sources=chosen,
                score=round(1.0 - v.probability, 4),
                cited=v.cited,
                supported=v.supported,
                wrong_markers=v.wrong_markers,
                reasons=v.reasons,
            )
        )
    if abstained:
        order = []
    return Attribution(
        cited_sources=order, sentences=results, invalid_markers=invalid, abstained=abstained
    )
