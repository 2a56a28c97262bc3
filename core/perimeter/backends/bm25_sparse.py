"""Lexical BM25 sparse vectors for models without a learned sparse head.

Only the term-frequency half of BM25 is computed here. The IDF half depends on the whole
collection, which changes with every upload and delete, so Qdrant applies it at query time
(sparse vector config ``modifier=IDF``); that is why :attr:`uses_idf_modifier` is True and why a
query term weighs its count in the question: Qdrant multiplies it by the term's IDF.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Sequence

from perimeter.domain import SparseVector
from perimeter.textproc import ENGLISH_STOPWORDS, Analyzer

# Term ids live in 31 bits so they fit any signed or unsigned 32-bit index type.
_TERM_ID_MASK = 0x7FFFFFFF


def term_id(term: str) -> int:
    """Stable id of a term: the same in every process and on every machine.

    Python's ``hash()`` is salted per process, so vectors indexed by one worker would not match
    queries encoded by another; CRC-32 of the UTF-8 bytes is deterministic and fast.
    """
    return zlib.crc32(term.encode("utf-8")) & _TERM_ID_MASK


class Bm25SparseEncoder:
    """BM25 term-frequency saturation per stemmed term; IDF is left to the store."""

    def __init__(
        self,
        k1: float = 1.2,
        b: float = 0.75,
        avg_len: float = 120.0,
        language: str = "english",
        stopwords: frozenset[str] = ENGLISH_STOPWORDS,
        min_word_chars: int = 2,
    ) -> None:
        if k1 < 0:
            raise ValueError("k1 must be >= 0")
        if not 0.0 <= b <= 1.0:
            raise ValueError("b must be within [0, 1]")
        if avg_len <= 0:
            raise ValueError("avg_len must be > 0")
        self._k1 = k1
        self._b = b
        self._avg_len = avg_len
        self._analyze = Analyzer(language, stopwords, min_word_chars)

    @property
    def uses_idf_modifier(self) -> bool:
        return True

    def tokenize(self, text: str) -> list[str]:
        """Lowercased words of at least ``min_word_chars`` characters, stop words removed,
        Snowball-stemmed."""
        return self._analyze(text)

    def term_ids(self, text: str) -> list[int]:
        """The vector indices of the text's terms, one per occurrence: what query expansion
        (``perimeter.retrieval.feedback``) counts in a feedback chunk."""
        return [term_id(t) for t in self.tokenize(text)]

    def encode_documents(self, texts: Sequence[str]) -> list[SparseVector]:
        return [self._encode_document(t) for t in texts]

    def encode_queries(self, texts: Sequence[str]) -> list[SparseVector]:
        return [self._encode_query(t) for t in texts]

    def _encode_document(self, text: str) -> SparseVector:
        terms = self.tokenize(text)
        if not terms:
            return SparseVector(indices=[], values=[])
        # Counted by id, not by stem: two stems that share a 31-bit id (rare) must not yield a
        # duplicate index, which Qdrant rejects.
        tf_by_id = Counter(term_id(t) for t in terms)
        length_norm = self._k1 * (1.0 - self._b + self._b * len(terms) / self._avg_len)
        indices = sorted(tf_by_id)
        values = [tf_by_id[i] * (self._k1 + 1.0) / (tf_by_id[i] + length_norm) for i in indices]
        return SparseVector(indices=indices, values=values)

    def _encode_query(self, text: str) -> SparseVector:
        # Each term weighs its count in the question: with the IDF modifier the score becomes
        # sum(count * IDF * doc weight) over the query's terms, i.e. BM25 summed over the query's
        # tokens. A word a question repeats is usually its topic; counting it once cost 0.06
        # nDCG@10 on CISI's sparse search (BENCHMARKS.md, "Retrieval quality: CISI").
        counts = Counter(term_id(t) for t in self.tokenize(text))
        indices = sorted(counts)
        return SparseVector(indices=indices, values=[float(counts[i]) for i in indices])
