"""The unsupported-content policy: annotate, redact, refuse, applied to verified answers."""

from __future__ import annotations

import pytest

from perimeter.domain import ScoredChunk, Usage
from perimeter.retrieval.answer import Answer, citation_of
from perimeter.retrieval.citations import attribute
from perimeter.retrieval.policy import REFUSAL, apply_policy, redaction_note, sentence_verdicts
from perimeter.settings import Settings

pytestmark = pytest.mark.unit

SOURCES = [
    ScoredChunk(
        "p1", "d1", 0, "The launch code for Project Zephyr is 7429.", "z.pdf", 1, None, 1.0
    ),
    ScoredChunk(
        "p2", "d2", 0, "The 2025 marketing budget is 1.2 million euros.", "b.md", None, None, 0.9
    ),
]


def verified(text: str) -> Answer:
    """An Answer exactly as AnswerService._finish builds one."""
    attr = attribute(text, SOURCES)
    return Answer(
        answer=text,
        citations=[citation_of(n, SOURCES[n - 1]) for n in attr.cited_sources],
        sources=[citation_of(i, c) for i, c in enumerate(SOURCES, start=1)],
        grounded=attr.grounded,
        unsupported_sentences=attr.unsupported,
        invalid_citations=attr.invalid_markers,
        abstained=attr.abstained,
        usage=Usage(),
        sentences=attr.sentences,
    )


MIXED = "The launch code for Project Zephyr is 7429. Zephyr was founded in Oslo in 1990."


def test_annotate_keeps_the_text_and_marks_the_sentence() -> None:
    a = apply_policy(verified(MIXED), "annotate")
    assert a.answer == MIXED
    assert a.grounded is False
    assert a.unsupported_sentences == ["Zephyr was founded in Oslo in 1990."]
    verdicts = sentence_verdicts(a)
    assert [v["supported"] for v in verdicts] == [True, False]
    assert verdicts[1]["reasons"]  # says why
    assert a.policy == "annotate" and not a.refused


def test_redact_drops_unsupported_sentences_and_says_so() -> None:
    a = apply_policy(verified(MIXED), "redact")
    assert a.answer == "The launch code for Project Zephyr is 7429. " + redaction_note(1)
    assert "Oslo" not in a.answer
    assert a.redacted_sentences == ["Zephyr was founded in Oslo in 1990."]
    assert a.grounded is True  # what is shown is supported
    assert [c.n for c in a.citations] == [1]


def test_redact_with_nothing_left_refuses() -> None:
    a = apply_policy(verified("Zephyr was founded in Oslo in 1990."), "redact")
    assert a.answer == REFUSAL and a.refused is True
    assert a.citations == [] and len(a.sources) == 2  # the sources are still shown


def test_refuse_withholds_any_answer_with_an_unsupported_sentence() -> None:
    a = apply_policy(verified(MIXED), "refuse")
    assert a.answer == REFUSAL
    assert a.refused is True and a.grounded is False
    assert a.redacted_sentences == ["Zephyr was founded in Oslo in 1990."]


def test_supported_answers_pass_every_policy_unchanged() -> None:
    text = "The launch code for Project Zephyr is 7429."
    for policy in ("annotate", "redact", "refuse"):
        a = apply_policy(verified(text), policy)
        assert a.answer == text and a.grounded is True and not a.refused


def test_unknown_policy_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown"):
        apply_policy(verified(MIXED), "ignore")


def test_embedded_default_never_shows_an_unsupported_claim() -> None:
    policy = Settings().answers.unsupported_policy
    assert policy in ("redact", "refuse")
    a = apply_policy(verified("The default value of XDG_DATA_DIRS is `x.dg-data`."), policy)
    assert "x.dg-data" not in a.answer


def test_policy_setting_rejects_unknown_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERIMETER_ANSWERS__UNSUPPORTED_POLICY", "refuse")
    assert Settings().answers.unsupported_policy == "refuse"
    monkeypatch.setenv("PERIMETER_ANSWERS__UNSUPPORTED_POLICY", "hide")
    with pytest.raises(ValueError):
        Settings()
