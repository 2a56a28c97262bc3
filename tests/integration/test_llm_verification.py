"""The optional LLM verification pass against the real embedded SmolLM2 server: the questions
are well-formed for an OpenAI-compatible server and every reply is used or ignored, never an
error. (How well a 135M model judges entailment is not asserted: it is weak, which is why the
pass is off by default.)"""

from __future__ import annotations

from typing import Any

import pytest

from perimeter.backends.openai_llm import OpenAICompatibleLLM
from perimeter.domain import ScoredChunk
from perimeter.retrieval.citations import attribute
from perimeter.retrieval.llm_check import llm_recheck

pytestmark = [pytest.mark.integration, pytest.mark.llm]


def test_the_pass_asks_once_per_supported_sentence(llm_server: Any) -> None:
    llm = OpenAICompatibleLLM(llm_server.base_url, "smollm2-135m-instruct", timeout_s=120)
    sources = [
        ScoredChunk("p", "d", 0, "The launch code for Project Zephyr is 7429.", "z.pdf", 1, None, 1)
    ]
    attr = attribute(
        "The launch code for Project Zephyr is 7429. Zephyr was founded in Oslo in 1990.", sources
    )
    assert [s.supported for s in attr.sentences] == [True, False]
    assert llm_recheck(attr, sources, llm) == 1  # the rejected sentence is not asked about
    assert attr.sentences[1].supported is False  # the model cannot un-reject it
    first = attr.sentences[0]
    assert first.supported or "verification model" in first.reasons[0]
