"""What a sentence asserts, beyond its words: the checkable claims in it.

A fabricated answer usually reuses the words of the passage and changes the one thing that
matters: a number, a date, a name, an identifier, a path, a "not", a "more than". Word overlap
cannot see that, so each such element is extracted here and must be found in the sources.
Extraction is deterministic and cheap (regular expressions plus the shared stemmer), so it runs
on every answer.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from perimeter.textproc import ENGLISH_STOPWORDS, analyze

# Typography that changes the characters of a value but not the value: curly quotes and
# apostrophes ("doesn’t" is "doesn't"), the dashes and minus sign, the multiplication sign,
# no-break spaces, trademark signs glued to names ("USPS®"). An em dash separates clauses, so it
# becomes a spaced hyphen (not a hyphen that would glue "2019—the" into one token).
_TYPOGRAPHY = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201b": "'",
        "\u2032": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2033": '"',
        "\u2010": "-",
        "\u2011": "-",
        "\u2012": "-",
        "\u2013": "-",
        "\u2212": "-",
        "\u2014": " - ",
        "\u00d7": "x",
        "\u00a0": " ",
        "\u2122": "",
        "\u00ae": "",
        "\u00a9": "",
    }
)
# Dimensions: "4 x 4", "4 by 4s", "4×4" are the lumber size "4x4".
_DIMENSION = re.compile(r"(?<![\w.])(\d+)\s*(?:x|by)\s*(\d+)(?=s?\b)", re.IGNORECASE)


def normalize_text(text: str) -> str:
    """The text with its typography made uniform (NFKC, then the table above): the form
    sentences and sources are compared in, so "1–800" and "1-800" are one value."""
    # The table first: NFKC would spell "™" as the letters "TM".
    return unicodedata.normalize("NFKC", text.translate(_TYPOGRAPHY))


def normalize_dimensions(text: str) -> str:
    return _DIMENSION.sub(r"\1x\2", text)


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
NUMBER_WORDS: frozenset[str] = frozenset(_NUMBER_WORDS)
# The number words an answer is held to: counts from three up ("twenty or more employees").
# "Two", "twice", "a dozen", "hundreds of" are phrasing far more often than values.
_COUNT_WORDS = {
    w: v
    for w, v in _NUMBER_WORDS.items()
    if w not in ("zero", "two", "twice", "dozen", "hundred", "thousand", "million", "billion")
}
_COUNT_WORD = re.compile(r"\b(" + "|".join(_COUNT_WORDS) + r")\b", re.IGNORECASE)
_NUMBER_WORD = re.compile(r"\b(" + "|".join(_NUMBER_WORDS) + r")\b", re.IGNORECASE)
# Inline code the model quoted: `x.dg-data`, ``/usr/share``.
_CODE_SPAN = re.compile(r"`+([^`]+)`+")
# Identifier-like tokens: paths, dotted/underscored names, letter-digit mixes (1099-PATR, B12),
# ALL-CAPS acronyms. These are exact values; a near miss is a different value.
_IDENTIFIER = re.compile(
    r"https?://[^\s)\]>\"']+"  # URLs
    r"|(?<![\w/])(?:~|\.{1,2})?/[\w.\-~]+(?:/[\w.\-~:]*)+"  # paths: two segments at least
    r"|\$?[A-Za-z_][\w\-]*(?:[._:][\w\-]+)+"  # dotted / scoped names, XDG_DATA_DIRS
    # letter-digit mixes, as the whole hyphenated token ("1-800-ASK-USPS", not "800-ASK-USPS")
    r"|\b[A-Za-z]+[\-]?\d[\w\-]*\b|\b(?:\d+-)*\d+[\-]?[A-Za-z][\w\-]*\b"
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


def strip_source_references(text: str) -> str:
    return _SOURCE_REFERENCE.sub(" ", text)


def source_references(text: str) -> list[int]:
    """The sources a sentence names in its words ("as passage 2 states", "(Passages 1 and
    3)"), 1-based, in order."""
    found: list[int] = []
    for m in _SOURCE_REFERENCE.finditer(text):
        for n in re.findall(r"\d+", m.group()):
            if int(n) not in found:
                found.append(int(n))
    return found


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
    # Runs of two or more capitalized words ("Pages Jaunes"): a name a source may write as one
    # token ("pagesjaunes.fr", CamelCase).
    name_runs: list[tuple[str, ...]] = field(default_factory=list)
    acronyms: set[str] = field(default_factory=set)  # the identifiers written as ALL-CAPS


_NAME_RUN = re.compile(r"\b[A-Z][\w'\-]*(?:\s+[A-Z][\w'\-]*)+")


def extract_claims(sentence: str) -> Claims:
    sentence = normalize_text(_SOURCE_REFERENCE.sub(" ", sentence))
    # Of the number words in an answer only counts from three up are checked as values (see
    # _COUNT_WORDS); sources spell the same counts either way, so theirs all count.
    claims = Claims(numbers=numbers_in(sentence, words=False))
    claims.numbers.update(_COUNT_WORDS[m.group().lower()] for m in _COUNT_WORD.finditer(sentence))
    for m in _CODE_SPAN.finditer(sentence):
        value = m.group(1).strip()
        if value:
            claims.identifiers.add(_squash(value))
    for m in _IDENTIFIER.finditer(normalize_dimensions(_CODE_SPAN.sub(" ", sentence))):
        value = m.group().strip(".-:")
        # A pure number is checked as a number; a trailing "s" acronym plural ("APIs") as its
        # singular.
        if not value or value.replace(".", "").replace(",", "").isdigit():
            continue
        if value.lower() in _DOTTED_ABBREVIATIONS:
            continue
        claims.identifiers.add(_squash(value))
        if value.isalpha() and value.rstrip("s").isupper():
            claims.acronyms.add(_squash(value))
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
    claims.name_runs = [tuple(m.group().split()) for m in _NAME_RUN.finditer(sentence)]
    lowered = [w.lower() for w in words]
    claims.negated = bool(_NEGATION_RE.search(sentence))
    claims.comparatives = {w for w in lowered if w in _COMPARATIVES}
    return claims


# Where a negation cue's clause ends: punctuation or a coordinating conjunction.
_CLAUSE_END = re.compile(
    r"[,;:()]|[.!?](?=\s|$)|\s(?:and|but|while|whereas|or|so)\s", re.IGNORECASE
)


def split_negated_clauses(text: str) -> tuple[str, str]:
    """``text`` as (what it states, what it denies): each clause that holds a negation, from
    the cue to the clause's end, moved to the second part. "Cut the potatoes, being careful not
    to break the sprouts" states "Cut the potatoes, being careful" and denies "not to break
    the sprouts"."""
    kept: list[str] = []
    denied: list[str] = []
    pos = 0
    for m in _NEGATION_RE.finditer(text):
        if m.start() < pos:
            continue
        kept.append(text[pos : m.start()])
        end = _CLAUSE_END.search(text, m.end())
        pos = end.start() if end else len(text)
        denied.append(text[m.start() : pos])
    kept.append(text[pos:])
    return re.sub(r"\s+([,.;:!?])", r"\1", "".join(kept)), " ".join(denied)


def without_negated_clauses(text: str) -> str:
    return split_negated_clauses(text)[0]


# Units an answer converts a source's value into ("79 degrees Fahrenheit (26 degrees
# Celsius)"): the converted number is arithmetic on a backed value, not a new claim.
_UNIT_OF = {
    "f": "F", "fahrenheit": "F", "c": "C", "celsius": "C",
    "in": "in", "inch": "in", "inches": "in", "cm": "cm", "centimeter": "cm",
    "centimeters": "cm", "centimetre": "cm", "centimetres": "cm",
    "ft": "ft", "foot": "ft", "feet": "ft", "m": "m", "meter": "m", "meters": "m",
    "metre": "m", "metres": "m", "mi": "mi", "mile": "mi", "miles": "mi", "km": "km",
    "kilometer": "km", "kilometers": "km", "kilometre": "km", "kilometres": "km",
    "lb": "lb", "lbs": "lb", "pound": "lb", "pounds": "lb", "kg": "kg", "kilogram": "kg",
    "kilograms": "kg", "oz": "oz", "ounce": "oz", "ounces": "oz", "g": "g", "gram": "g",
    "grams": "g",
}  # fmt: skip
# (from, to): value * factor + offset; the reverse directions are derived below.
_FORWARD_CONVERSIONS: dict[tuple[str, str], tuple[float, float]] = {
    ("F", "C"): (5 / 9, -32 * 5 / 9),
    ("in", "cm"): (2.54, 0.0),
    ("ft", "m"): (0.3048, 0.0),
    ("mi", "km"): (1.609344, 0.0),
    ("lb", "kg"): (0.45359237, 0.0),
    ("oz", "g"): (28.349523, 0.0),
}
_CONVERSIONS: dict[tuple[str, str], tuple[float, float]] = {
    **_FORWARD_CONVERSIONS,
    **{(b, a): (1 / k, -o / k) for (a, b), (k, o) in _FORWARD_CONVERSIONS.items()},
}
_UNIT_NAMES = "|".join(sorted(_UNIT_OF, key=len, reverse=True))
_MEASURE = re.compile(
    r"(?<![\w.])(\d+(?:\.\d+)?)\s*(?:°\s*|degrees?\s+)?(" + _UNIT_NAMES + r")\b",
    re.IGNORECASE,
)


def conversion_backed(number: str, sentence: str, backed: set[str]) -> bool:
    """``number`` is, with its unit, a conversion of another measure in ``sentence`` whose
    number ``backed`` holds (within rounding: 1 unit or 3%)."""
    measures = [
        (_normalize_number(m.group(1)), _UNIT_OF[m.group(2).lower()])
        for m in _MEASURE.finditer(sentence)
    ]
    for value, unit in measures:
        if value != number:
            continue
        for other, other_unit in measures:
            conversion = _CONVERSIONS.get((other_unit, unit))
            if other == number or other not in backed or conversion is None:
                continue
            converted = float(other) * conversion[0] + conversion[1]
            if abs(converted - float(number)) <= max(1.0, 0.03 * abs(converted)):
                return True
    return False


# Abbreviations and symbols a source writes for a word an answer spells out: months and
# weekdays ("Nov. 1" is "November 1"), temperature scales ("79 °F" is "79 degrees
# Fahrenheit"), "%" for "percent". Each found in a source adds the spelled-out word to its
# terms.
_ALIASES: tuple[tuple[re.Pattern[str], str], ...] = (
    *(
        (re.compile(rf"\b{abbr}\b"), month)
        for abbr, month in (
            ("Jan", "January"),
            ("Feb", "February"),
            ("Mar", "March"),
            ("Apr", "April"),
            ("Jun", "June"),
            ("Jul", "July"),
            ("Aug", "August"),
            ("Sept?", "September"),
            ("Oct", "October"),
            ("Nov", "November"),
            ("Dec", "December"),
            ("Mon", "Monday"),
            ("Tues?", "Tuesday"),
            ("Wed", "Wednesday"),
            ("Thu(?:rs?)?", "Thursday"),
            ("Fri", "Friday"),
            ("Sat", "Saturday"),
            ("Sun", "Sunday"),
        )
    ),
    (re.compile(r"°\s?F\b|\bdeg(?:rees?|\.)?\s?F\b"), "Fahrenheit"),
    (re.compile(r"°\s?C\b|\bdeg(?:rees?|\.)?\s?C\b"), "Celsius"),
    (re.compile(r"%"), "percent"),
)


def alias_terms(text: str) -> set[str]:
    found: set[str] = set()
    for pattern, word in _ALIASES:
        if pattern.search(text):
            found.update(analyze(word))
    return found


# A demonym or adjective of a place name: "American" from "America", "Canadian" from
# "Canada", "Italian" from "Italy" (stems "itali" / "italian").
_DEMONYM_SUFFIXES = ("ian", "an", "n")


def name_in(stem: str, terms: set[str]) -> bool:
    """A stemmed name is backed by ``terms`` as itself or as the place its demonym names."""
    if stem in terms:
        return True
    for suffix in _DEMONYM_SUFFIXES:
        base = stem[: -len(suffix)]
        if stem.endswith(suffix) and len(base) >= 4 and (base in terms or base + "a" in terms):
            return True
    return False


def acronym_found(value: str, sources: list[SourceIndex]) -> bool:
    """An acronym is backed by its expansion: consecutive capitalized words of a source whose
    initials spell it, lower-case stop words skipped ("FEHA": "Fair Employment and Housing
    Act"). Lower-case words would match a three-letter acronym somewhere in a long source by
    chance, so they break an expansion."""
    if not value.isalpha() or not 2 <= len(value) <= 6:
        return False
    for s in sources:
        initials: list[str] = []
        for word in _WORD.findall(s.text):
            if word[0].isupper():
                initials.append(word[0].lower())
            elif word not in ENGLISH_STOPWORDS:
                initials.append("|")
        if value in "".join(initials):
            return True
    return False


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
    """``text`` and ``sentences`` as ``normalize_text`` left them."""
    sentence_terms = [set(analyze(s)) for s in sentences]
    return SourceIndex(
        text=text,
        squashed=_squash(normalize_dimensions(text)),
        terms=set(analyze(text)) | alias_terms(text),
        numbers=numbers_in(text),
        words={w.lower() for w in _WORD.findall(text)},
        sentences=sentences,
        sentence_terms=sentence_terms,
        sentence_negated=[bool(_NEGATION_RE.search(s)) for s in sentences],
        undotted={w.replace(".", "") for w in text.lower().split()}
        | {w.replace(".", "").strip(",;:()") for w in text.lower().split()},
    )


_URL_PREFIX = re.compile(r"^https?://(?:www\.)?")


def identifier_found(value: str, sources: list[SourceIndex]) -> bool:
    """The exact value, as a whole token ("XDG_DATA_DIRS" is in "$XDG_DATA_DIRS"; "x.dg-data" is
    not in "XDG_DATA_DIRS", though their letters are). A plural "s" ("4x4s", "APIs") and the
    dots of an acronym ("U.S." for "US") do not make a different value."""
    value = value.lstrip("$").rstrip("/")
    candidates = {value}
    # A URL names the same page with either scheme and with or without "www.".
    bare = _URL_PREFIX.sub("", value)
    if bare and bare != value:
        candidates.add(bare)
    if len(value) > 2 and value.endswith("s"):
        candidates.add(value[:-1])
    for v in candidates:
        pattern = re.compile(r"(?<![\w\-])" + re.escape(v) + r"(?![\w\-])")
        if any(pattern.search(s.squashed) for s in sources):
            return True
    if value.isalpha():
        return any(value in s.undotted for s in sources)
    return False
