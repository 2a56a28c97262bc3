"""Text analysis shared by the lexical sparse encoder and citation attribution.

Lower-case unicode words, English stop words removed, Snowball-stemmed: "indexing" and "indexed"
meet as "index". PyStemmer is a C extension, loaded once per process on first use.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

WORD = re.compile(r"\w+", re.UNICODE)

STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further
    had has have having he her here hers herself him himself his how i if in into is it its itself
    just me more most my myself no nor not now of off on once only or other our ours ourselves out
    over own same she should so some such than that the their theirs them themselves then there
    these they this those through to too under until up very was we were what when where which
    while who whom why will with would you your yours yourself yourselves""".split()
)


@lru_cache(maxsize=1)
def _stemmer() -> Any:
    import Stemmer

    return Stemmer.Stemmer("english")


def analyze(text: str) -> list[str]:
    """Terms of ``text`` in order, with repeats (callers count term frequency)."""
    words = [w for w in WORD.findall(text.lower()) if w not in STOPWORDS and not w.isspace()]
    words = [w for w in words if len(w) > 1 or w.isdigit()]
    if not words:
        return []
    return list(_stemmer().stemWords(words))
