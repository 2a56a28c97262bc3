"""What happens to answer sentences the verifier could not back with the sources.

* ``annotate``: the answer is shown whole; each unsupported sentence is marked (the web page
  highlights it, the API lists it in ``unsupported_sentences`` and per-sentence verdicts).
* ``redact``: unsupported sentences are dropped from the answer and a note says how many; when
  none is left, the answer is refused.
* ``refuse``: an answer with any unsupported sentence is replaced by a refusal; the sources are
  still shown, so the reader can look for themselves.

Set per deployment (``PERIMETER_ANSWERS__UNSUPPORTED_POLICY``) and per collection (its
``unsupported_policy`` field wins). Applied in one place, to the finished ``Answer``, so the
/v1/query route, its stream and the OpenAI-compatible endpoint return the same verdicts.
"""

from __future__ import annotations

from dataclasses import replace

from perimeter.domain import UNSUPPORTED_POLICIES as POLICIES
from perimeter.retrieval.answer import Answer

REFUSAL = (
    "I can't give an answer that the sources support. The passages that were found are "
    "listed below."
)


def redaction_note(n: int) -> str:
    return f"({n} sentence{'s' if n != 1 else ''} removed: not supported by the sources.)"


def apply_policy(answer: Answer, policy: str) -> Answer:
    """The answer as it may be shown under ``policy``. Abstentions and fully supported answers
    pass unchanged (apart from recording the policy)."""
    if policy not in POLICIES:
        raise ValueError(f"unknown unsupported-content policy {policy!r}; expected {POLICIES}")
    if answer.abstained or answer.degraded or not answer.unsupported_sentences:
        return replace(answer, policy=policy)
    if policy == "annotate":
        return replace(answer, policy=policy)
    kept = [s for s in answer.sentences if not s.checked or s.supported]
    has_claim = any(s.checked and s.supported for s in kept)
    if policy == "refuse" or not has_claim:
        return replace(
            answer,
            answer=REFUSAL,
            citations=[],
            grounded=False,
            policy=policy,
            redacted_sentences=list(answer.unsupported_sentences),
            refused=True,
        )
    # Redact: the supported sentences, in order, with a note of what was removed. Citations
    # keep only the sources that back a sentence still shown.
    backing = {n for s in kept for n in s.sources}
    removed = list(answer.unsupported_sentences)
    text = " ".join(s.sentence for s in kept) + " " + redaction_note(len(removed))
    return replace(
        answer,
        answer=text,
        citations=[c for c in answer.citations if c.n in backing],
        grounded=True,
        policy=policy,
        redacted_sentences=removed,
        refused=False,
    )


def sentence_verdicts(answer: Answer) -> list[dict[str, object]]:
    """The per-sentence verdicts as the API returns them (/v1/query and the OpenAI route)."""
    return [
        {
            "sentence": s.sentence,
            "supported": s.supported,
            "checked": s.checked,
            "sources": list(s.sources),
            "wrong_markers": list(s.wrong_markers),
            "reasons": list(s.reasons),
            "score": s.score,
        }
        for s in answer.sentences
    ]
