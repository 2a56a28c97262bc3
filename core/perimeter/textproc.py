"""Text analysis shared by the lexical sparse encoder and citation attribution.

Lower-case unicode words, English stop words removed, Snowball-stemmed: "indexing" and "indexed"
meet as "index". One analyzer for both, so a term that makes a chunk retrievable is the same term
that makes it count as support for an answer sentence.
"""

from __future__ import annotations

import re
import threading
from typing import Any

# Unicode letters and digits; "\w" would also keep runs of underscores, which carry no meaning.
WORD_RE = re.compile(r"[^\W_]+")

# A compact English stop list (the classic short lists: articles, pronouns, auxiliaries,
# prepositions, conjunctions). Kept short on purpose: a long list starts dropping words that do
# carry meaning in a query ("system", "first", ...), and IDF already discounts common words.
ENGLISH_STOPWORDS: frozenset[str] = frozenset(
    [
        "a",
        "about",
        "above",
        "after",
        "again",
        "against",
        "all",
        "am",
        "an",
        "and",
        "any",
        "are",
        "as",
        "at",
        "be",
        "because",
        "been",
        "before",
        "being",
        "below",
        "between",
        "both",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "doing",
        "down",
        "during",
        "each",
        "few",
        "for",
        "from",
        "further",
        "had",
        "has",
        "have",
        "having",
        "he",
        "her",
        "here",
        "hers",
        "herself",
        "him",
        "himself",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "itself",
        "just",
        "me",
        "more",
        "most",
        "my",
        "myself",
        "no",
        "nor",
        "not",
        "now",
        "of",
        "off",
        "on",
        "once",
        "only",
        "or",
        "other",
        "our",
        "ours",
        "ourselves",
        "out",
        "over",
        "own",
        "same",
        "she",
        "should",
        "so",
        "some",
        "such",
        "than",
        "that",
        "the",
        "their",
        "theirs",
        "them",
        "themselves",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "through",
        "to",
        "too",
        "under",
        "until",
        "up",
        "very",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "whom",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "yours",
        "yourself",
        "yourselves",
    ]
)


class Analyzer:
    """Tokenize + stop + stem. PyStemmer objects are not thread-safe (a C stemming context and a
    cache), and the API and worker threads analyze concurrently: one stemmer per thread.

    ``min_word_chars``: words shorter than this are dropped before stemming. The default (1)
    keeps every word, which the verifier needs ("5 mg", "type 2"). Lexical retrieval drops
    one-character words (``retrieval.bm25_min_word_chars``), as Lucene-style and bm25s analyzers
    do by token pattern: the possessive "s", "e"/"g" of "e.g.", initials and list letters match
    many chunks and carry no topic."""

    def __init__(
        self,
        language: str = "english",
        stopwords: frozenset[str] = ENGLISH_STOPWORDS,
        min_word_chars: int = 1,
    ) -> None:
        if min_word_chars < 1:
            raise ValueError("min_word_chars must be >= 1")
        self._language = language
        self._stopwords = stopwords
        self._min_chars = min_word_chars
        self._local = threading.local()

    def _stemmer(self) -> Any:
        stemmer: Any = getattr(self._local, "stemmer", None)
        if stemmer is None:
            import Stemmer  # deferred: nothing is loaded at import time

            stemmer = Stemmer.Stemmer(self._language)
            self._local.stemmer = stemmer
        return stemmer

    def __call__(self, text: str) -> list[str]:
        """Terms of ``text`` in order, with repeats (callers count term frequency)."""
        words = [
            w
            for w in WORD_RE.findall(text.lower())
            if len(w) >= self._min_chars and w not in self._stopwords
        ]
        if not words:
            return []
        return list(self._stemmer().stemWords(words))


_default = Analyzer()


def analyze(text: str) -> list[str]:
    return _default(text)


# --- Sentences -------------------------------------------------------------------------------
# One sentence splitter for chunking, the offline parser and answer verification (they used to
# disagree: a sentence the chunker kept whole could be two claims to the verifier).
#
# A sentence ends at terminal punctuation (plus closing quotes/brackets) followed by whitespace,
# and, where the caller asks, at a line break. Not after a known abbreviation ("e.g.", "Dr."),
# a single initial ("J. Smith") or a bare list number ("2. Structure: ..."), which would cut a
# claim in two.
_SENTENCE_END = re.compile(r"[.!?\u2026\u3002\uff01\uff1f]+[\"'\u201d\u2019)\]]*(?=\s|$)")
_ABBREVIATIONS: frozenset[str] = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "sr",
        "jr",
        "st",
        "vs",
        "etc",
        "e.g",
        "i.e",
        "eg",
        "ie",
        "inc",
        "ltd",
        "co",
        "corp",
        "no",
        "fig",
        "approx",
        "dept",
        "est",
        "u.s",
        "jan",
        "feb",
        "mar",
        "apr",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
    ]
)


def _is_false_end(text: str, start: int, match: re.Match[str]) -> bool:
    if not match.group().startswith("."):
        return False
    before = text[start : match.start()].split()
    if not before:
        return True
    last = before[-1].lower().lstrip("([\"'")
    if last in _ABBREVIATIONS or (len(last) == 1 and last.isalpha()):
        return True
    # "2." opening a list item: the number belongs to the sentence that follows.
    return len(before) == 1 and last.isdigit()


def sentence_spans(text: str, line_breaks: bool = True) -> list[tuple[int, int]]:
    """(start, end) of each stripped, non-empty sentence of ``text``, in order.

    ``line_breaks``: a line break also ends a sentence (chunk text, answers, lists); off for
    running text that was wrapped at arbitrary points (parser output)."""
    cuts: list[int] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        if line_breaks:
            start = max(start, text.rfind("\n", 0, match.start()) + 1)
        if _is_false_end(text, start, match):
            continue
        cuts.append(match.end())
        start = match.end()
    if line_breaks:
        cuts.extend(m.end() for m in re.finditer(r"\n", text))
        cuts.sort()
    cuts.append(len(text))
    spans: list[tuple[int, int]] = []
    start = 0
    for cut in cuts:
        if cut <= start:
            continue
        piece = text[start:cut]
        stripped = piece.strip()
        if stripped:
            lead = len(piece) - len(piece.lstrip())
            spans.append((start + lead, start + lead + len(stripped)))
        start = cut
    return spans


def split_sentences(text: str, line_breaks: bool = True) -> list[str]:
    """The sentences of ``text`` (see :func:`sentence_spans`)."""
    return [text[a:b] for a, b in sentence_spans(text, line_breaks)]
