"""What a sentence asserts, beyond its words: the checkable claims in it.

A fabricated answer usually reuses the words of the passage and changes the one thing that
matters: a number, a date, a name, an identifier, a path, a "not", a "more than". Word overlap
cannot see that, so each such element is extracted here and must be found in the sources.
Extraction is deterministic and cheap (regular expressions plus the shared stemmer), so it runs
on every answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from perimeter.textproc import analyze

# Numbers with optional thousands separators / decimals / percent ("1,000", "3.5", "40%").
_NUMBER = re.compile(r"(?<![\w.])\d{1,3}(?:,\d{3})+(?:\.\d+)?|(?<![\w.])\d+(?:\.\d+)?")
_NUMBER_WORDS = {
    "zero": "0",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
    "eleven": "11",
    "twelve": "12",
    "fifteen": "15",
    "twenty": "20",
    "thirty": "30",
    "forty": "40",
    "fifty": "50",
    "hundred": "100",
    "thousand": "1000",
    "million": "1000000",
    "billion": "1000000000",
    "twice": "2",
    "dozen": "12",
}
_NUMBER_WORD = re.compile(r"\b(" + "|".join(_NUMBER_WORDS) + r")\b", re.IGNORECASE)
# Inline code the model quoted: `x.dg-data`, ``/usr/share``.
_CODE_SPAN = re.compile(r"`+([^`]+)`+")
# Identifier-like tokens: paths, dotted/underscored names, letter-digit mixes (1099-PATR, B12),
# ALL-CAPS acronyms. These are exact values; a near miss is a different value.
_IDENTIFIER = re.compile(
    r"https?://[^\s)\]>\"']+"  # URLs
    r"|(?<![\w/])(?:~|\.{1,2})?/[\w.\-~]+(?:/[\w.\-~:]*)+"  # paths: two segments at least
    r"|\$?[A-Za-z_][\w\-]*(?:[._:][\w\-]+)+"  # dotted / scoped names, XDG_DATA_DIRS
    r"|\b[A-Za-z]+[\-]?\d[\w\-]*\b|\b\d+[\-]?[A-Za-z][\w\-]*\b"  # letter-digit mixes
    r"|\b[A-Z]{2,}s?\b"  # acronyms
)
_CAPITALIZED = re.compile(r"\b[A-Z][a-z][\w'\-]*\b")
# Capitalized words that are not names (sentence openers, pronouns, calendar words handled by
# numbers elsewhere). Stop words are removed separately.
_NOT_NAMES = frozenset(
    [
        "i",
        "however",
        "therefore",
        "additionally",
        "also",
        "based",
        "according",
        "overall",
        "yes",
        "no",
        "in",
        "on",
        "for",
        "to",
        "the",
        "this",
        "that",
        "these",
        "those",
        "it",
        "its",
        "there",
        "here",
        "while",
        "although",
        "though",
        "firstly",
        "secondly",
        "finally",
        "step",
        "note",
        "please",
        "answer",
        "question",
        "passage",
        "passages",
        "source",
        "sources",
        "context",
        "document",
        "documents",
        "generally",
        "typically",
        "some",
        "many",
        "most",
        "other",
        "another",
        "each",
        "both",
        "please",
        "thus",
    ]
)
_NEGATIONS = frozenset(
    [
        "not",
        "no",
        "never",
        "none",
        "nobody",
        "nothing",
        "neither",
        "nor",
        "cannot",
        "without",
        "unable",
        "lack",
        "lacks",
        "lacking",
        "fail",
        "fails",
        "failed",
        "neglig",
    ]
)
_NEGATION_RE = re.compile(r"\b(?:" + "|".join(sorted(_NEGATIONS)) + r")\b|n't\b", re.IGNORECASE)
# Comparatives and superlatives: "more", "fewer", "-er than" (a swap to the antonym flips the
# claim while keeping every other word).
_COMPARATIVES = frozenset(
    [
        "more",
        "less",
        "fewer",
        "greater",
        "higher",
        "lower",
        "larger",
        "smaller",
        "bigger",
        "better",
        "worse",
        "faster",
        "slower",
        "longer",
        "shorter",
        "earlier",
        "later",
        "older",
        "newer",
        "cheaper",
        "increase",
        "increases",
        "increased",
        "decrease",
        "decreases",
        "decreased",
        "most",
        "least",
        "best",
        "worst",
        "highest",
        "lowest",
        "largest",
        "smallest",
        "maximum",
        "minimum",
        "above",
        "below",
        "before",
        "after",
        "only",
        "always",
    ]
)
_WORD = re.compile(r"[^\W_]+(?:'[a-z]+)?", re.UNICODE)


def _normalize_number(token: str) -> str:
    token = token.replace(",", "")
    if "." in token:
        token = token.rstrip("0").rstrip(".")
    return token or "0"


def numbers_in(text: str, words: bool = True) -> set[str]:
    """Numbers in ``text``, normalised ("1,000" -> "1000"); ``words``: also number words
    ("two" -> "2"), so a source's "two" backs an answer's "2"."""
    found = {_normalize_number(m.group()) for m in _NUMBER.finditer(text)}
    if words:
        found.update(_NUMBER_WORDS[m.group().lower()] for m in _NUMBER_WORD.finditer(text))
    return found


# "(passage 2)", "Passages 1 and 3", "source [2]": where the answer says it read something, not
# a value it claims.
_SOURCE_REFERENCE = re.compile(
    r"\(?\b(?:passages?|sources?|documents?|contexts?|references?)\s*\[?\d+\]?"
    r"(?:\s*(?:,|and|&|or)\s*\[?\d+\]?)*\)?",
    re.IGNORECASE,
)
# Dotted abbreviations that look like scoped names.
_DOTTED_ABBREVIATIONS = frozenset(["e.g", "i.e", "u.s", "u.k", "a.m", "p.m", "etc", "vs", "u.s.a"])


def _squash(text: str) -> str:
    """Lower-case, whitespace collapsed: the form sources are searched in for exact values."""
    return " ".join(text.lower().split())


@dataclass(slots=True)
class Claims:
    """The checkable elements of one sentence."""

    numbers: set[str] = field(default_factory=set)
    identifiers: set[str] = field(default_factory=set)  # exact values: code, paths, IDs
    names: set[str] = field(default_factory=set)  # stemmed proper nouns
    name_words: dict[str, str] = field(default_factory=dict)  # stem -> the word as written
    negated: bool = False
    comparatives: set[str] = field(default_factory=set)


def extract_claims(sentence: str) -> Claims:
    sentence = _SOURCE_REFERENCE.sub(" ", sentence)
    # Number words in an answer are not checked as values: "in two ways", "one of" are
    # phrasing far more often than claims, and sources spell the same counts either way.
    claims = Claims(numbers=numbers_in(sentence, words=False))
    for m in _CODE_SPAN.finditer(sentence):
        value = m.group(1).strip()
        if value:
            claims.identifiers.add(_squash(value))
    for m in _IDENTIFIER.finditer(_CODE_SPAN.sub(" ", sentence)):
        value = m.group().strip(".-:")
        # A pure number is checked as a number; a trailing "s" acronym plural ("APIs") as its
        # singular.
        if not value or value.replace(".", "").replace(",", "").isdigit():
            continue
        if value.lower() in _DOTTED_ABBREVIATIONS:
            continue
        claims.identifiers.add(_squash(value))
    words = _WORD.findall(sentence)
    for m in _CAPITALIZED.finditer(sentence):
        word = m.group()
        # The first word of a sentence is capitalized anyway: not evidence of a name.
        if m.start() == 0 or sentence[: m.start()].strip() in {"*", "-", "•"}:
            continue
        if sentence[: m.start()].rstrip().endswith((":", ".", "*", "-", '"')):
            continue
        if word.lower() in _NOT_NAMES:
            continue
        # A heading word ("Scope of Coverage: ...") is title case, not a name.
        colon = sentence.find(":")
        if 0 < colon < 40 and m.start() < colon:
            continue
        stem = analyze(word)
        if stem:
            claims.names.add(stem[0])
            claims.name_words.setdefault(stem[0], word)
    lowered = [w.lower() for w in words]
    claims.negated = bool(_NEGATION_RE.search(sentence))
    claims.comparatives = {w for w in lowered if w in _COMPARATIVES}
    return claims


@dataclass(slots=True)
class SourceIndex:
    """One source prepared once for checking many sentences against it."""

    text: str
    squashed: str
    terms: set[str]
    numbers: set[str]
    words: set[str]
    sentences: list[str]
    sentence_terms: list[set[str]]
    sentence_negated: list[bool]
    undotted: set[str]  # words with their dots removed: "u.s." -> "us"


def index_source(text: str, sentences: list[str]) -> SourceIndex:
    sentence_terms = [set(analyze(s)) for s in sentences]
    return SourceIndex(
        text=text,
        squashed=_squash(text),
        terms=set(analyze(text)),
        numbers=numbers_in(text),
        words={w.lower() for w in _WORD.findall(text)},
        sentences=sentences,
        sentence_terms=sentence_terms,
        sentence_negated=[bool(_NEGATION_RE.search(s)) for s in sentences],
        undotted={w.replace(".", "") for w in text.lower().split()}
        | {w.replace(".", "").strip(",;:()") for w in text.lower().split()},
    )


def identifier_found(value: str, sources: list[SourceIndex]) -> bool:
    """The exact value, as a whole token ("XDG_DATA_DIRS" is in "$XDG_DATA_DIRS"; "x.dg-data" is
    not in "XDG_DATA_DIRS", though their letters are). A plural "s" ("4x4s", "APIs") and the
    dots of an acronym ("U.S." for "US") do not make a different value."""
    value = value.lstrip("$").rstrip("/")
    candidates = {value}
    if len(value) > 2 and value.endswith("s"):
        candidates.add(value[:-1])
    for v in candidates:
        pattern = re.compile(r"(?<![\w\-])" + re.escape(v) + r"(?![\w\-])")
        if any(pattern.search(s.squashed) for s in sources):
            return True
    if value.isalpha():
        return any(value in s.undotted for s in sources)
    return False
