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
    cache), and the API and worker threads analyze concurrently: one stemmer per thread."""

    def __init__(
        self, language: str = "english", stopwords: frozenset[str] = ENGLISH_STOPWORDS
    ) -> None:
        self._language = language
        self._stopwords = stopwords
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
        words = [w for w in WORD_RE.findall(text.lower()) if w not in self._stopwords]
        if not words:
            return []
        return list(self._stemmer().stemWords(words))


_default = Analyzer()


def analyze(text: str) -> list[str]:
    return _default(text)
