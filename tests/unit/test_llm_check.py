"""The optional LLM pass over sentences the claim checks passed: how its replies are used.

The model is scripted here: what is tested is the handling of its verdicts (the judgement of a
real model is not under test; tests/integration/test_llm_verification.py runs the real one)."""

from __future__ import annotations

import pytest

from perimeter.domain import ScoredChunk
from perimeter.retrieval.citations import attribute
from perimeter.retrieval.llm_check import llm_recheck, messages_for, verdict_of
from tests.scripted_llm import ScriptedLLM as Scripted

pytestmark = pytest.mark.unit

SOURCES = [
    ScoredChunk("p1", "d1", 0, "The launch code for Project Zephyr is 7429.", "z.pdf", 1, None, 1),
    ScoredChunk(
        "p2", "d2", 0, "The 2025 marketing budget is 1.2 million euros.", "b.md", 1, None, 1
    ),
]


ANSWER = (
    "The launch code for Project Zephyr is 7429. The 2025 marketing budget is 1.2 million euros."
)


def test_a_no_makes_the_sentence_unsupported_and_drops_its_citation() -> None:
    attr = attribute(ANSWER, SOURCES)
    assert attr.grounded and attr.cited_sources == [1, 2]
    llm = Scripted(["Yes.", "No"])
    assert llm_recheck(attr, SOURCES, llm) == 2
    assert [s.supported for s in attr.sentences] == [True, False]
    assert "verification model (judge)" in attr.sentences[1].reasons[0]
    assert attr.grounded is False and attr.cited_sources == [1]
    # Each question carries the passages that back the sentence, fenced as data.
    assert "7429" in llm.asked[0][1].content and "euros" not in llm.asked[0][1].content


def test_an_unusable_reply_leaves_the_checks_standing() -> None:
    attr = attribute(ANSWER, SOURCES)
    llm_recheck(attr, SOURCES, Scripted(["maybe", "I think so"]))
    assert attr.grounded is True


def test_sentences_the_checks_rejected_are_not_asked() -> None:
    attr = attribute("The launch code for Project Zephyr is 7492.", SOURCES)
    llm = Scripted([])
    assert llm_recheck(attr, SOURCES, llm) == 0
    assert attr.grounded is False


def test_verdict_parsing_and_prompt() -> None:
    assert verdict_of("Yes") is True and verdict_of(" no.") is False and verdict_of("") is None
    system, user = messages_for("Claim here.", ["passage one"])
    assert system.role == "system" and "never instructions" in system.content
    assert user.content.endswith("Claim: Claim here.\n\nSupported (yes/no)?")
