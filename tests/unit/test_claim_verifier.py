"""The claim-level answer verifier: what a sentence asserts must be in its sources."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from perimeter.domain import ScoredChunk
from perimeter.retrieval.citations import attribute, split_answer
from perimeter.retrieval.claims import extract_claims
from perimeter.textproc import sentence_spans, split_sentences

pytestmark = pytest.mark.unit


def chunk(text: str, n: int = 1) -> ScoredChunk:
    return ScoredChunk(f"p{n}", f"d{n}", 0, text, f"doc{n}.pdf", 1, None, 1.0)


XDG = chunk(
    "$XDG_DATA_DIRS defines the preference-ordered set of base directories to search for data "
    "files in addition to the $XDG_DATA_HOME base directory. The directories in $XDG_DATA_DIRS "
    "should be seperated with a colon ':'. If $XDG_DATA_DIRS is either not set or empty, a value "
    "equal to /usr/local/share/:/usr/share/ should be used."
)
ZEPHYR = chunk(
    "Project Zephyr was launched in Oslo in 2019 by Ingrid Berg. The launch code for Project "
    "Zephyr is 7429. The project does not accept external contributions.",
    1,
)
BUDGET = chunk("The marketing budget for 2025 is 1.2 million euros, more than in 2024.", 2)


def test_xdg_fabricated_default_is_not_shown_as_supported() -> None:
    # The case: the sentence shares most of its words with the passage.
    answer = "The default value of the XDG_DATA_DIRS variable is `x.dg-data`."
    attr = attribute(answer, [XDG], question="What is the default value of XDG_DATA_DIRS?")
    assert attr.grounded is False
    assert attr.unsupported == [answer]
    (verdict,) = attr.sentences
    assert verdict.supported is False and verdict.sources == []
    assert any("x.dg-data" in r for r in verdict.reasons)


def test_xdg_true_default_passes() -> None:
    answer = "If XDG_DATA_DIRS is not set, the default is /usr/local/share/:/usr/share/."
    attr = attribute(answer, [XDG], question="What is the default value of XDG_DATA_DIRS?")
    assert attr.grounded is True, attr.sentences
    assert attr.cited_sources == [1]


def test_fabricated_number_is_caught() -> None:
    attr = attribute("The launch code for Project Zephyr is 7492.", [ZEPHYR, BUDGET])
    assert attr.grounded is False
    assert "7492" in " ".join(attr.sentences[0].reasons)


def test_swapped_entity_is_caught() -> None:
    attr = attribute("Project Zephyr was launched in Bergen in 2019 by Ingrid Berg.", [ZEPHYR])
    assert attr.grounded is False


def test_negated_claim_is_caught() -> None:
    attr = attribute("The project accepts external contributions.", [ZEPHYR])
    assert attr.grounded is False
    assert any("negation" in r for r in attr.sentences[0].reasons)


def test_unsupported_extra_sentence_is_caught_and_only_it() -> None:
    answer = (
        "The launch code for Project Zephyr is 7429. "
        "It is important to consult a security professional before sharing launch codes, as "
        "regulations may vary depending on your country."
    )
    attr = attribute(answer, [ZEPHYR, BUDGET])
    assert [s.supported for s in attr.sentences] == [True, False]
    assert attr.unsupported == [attr.sentences[1].sentence]


def test_faithful_paraphrase_passes() -> None:
    attr = attribute("Ingrid Berg launched Project Zephyr in Oslo in 2019.", [ZEPHYR, BUDGET])
    assert attr.grounded is True, attr.sentences
    assert attr.cited_sources == [1]


def test_multi_source_sentence_passes_and_cites_both() -> None:
    answer = (
        "Project Zephyr's launch code is 7429, and the 2025 marketing budget is 1.2 million euros."
    )
    attr = attribute(answer, [ZEPHYR, BUDGET])
    assert attr.grounded is True, attr.sentences
    assert sorted(attr.cited_sources) == [1, 2]


def test_marker_to_a_source_that_does_not_support_the_sentence_is_reported() -> None:
    attr = attribute("The launch code for Project Zephyr is 7429 [2].", [ZEPHYR, BUDGET])
    (verdict,) = attr.sentences
    assert verdict.supported is True
    assert verdict.wrong_markers == [2]
    assert verdict.sources == [1]  # attributed to the source that backs it, not the marker


def test_marker_to_a_missing_source_is_invalid() -> None:
    attr = attribute("The launch code for Project Zephyr is 7429 [5].", [ZEPHYR, BUDGET])
    assert attr.invalid_markers == [5]


def test_a_value_from_the_question_is_not_evidence() -> None:
    # The user supplied 7492; the sources say 7429.
    attr = attribute("Yes, the launch code is 7492.", [ZEPHYR], question="Is the launch code 7492?")
    assert attr.grounded is False


def test_preambles_and_abstentions_are_not_judged() -> None:
    answer = "Based on the given passages,\nThe launch code for Project Zephyr is 7429."
    attr = attribute(answer, [ZEPHYR])
    assert [s.checked for s in attr.sentences] == [False, True]
    assert attr.grounded is True


def test_claims_extraction() -> None:
    c = extract_claims("In 2019, Ingrid Berg set XDG_DATA_DIRS to `/usr/share` and not 3,000 ms.")
    assert {"2019", "3000"} <= c.numbers
    assert {"xdg_data_dirs", "/usr/share"} <= c.identifiers
    assert "ingrid" in c.names and "berg" in c.names
    assert c.negated is True
    assert extract_claims("The budget is higher than last year.").comparatives == {"higher"}


def test_list_markers_are_layout_not_values() -> None:
    pieces = split_answer("Differences:\n1. Shape: red cells are round.\n2. Size: they are small.")
    assert [p.text for p in pieces] == [
        "Differences:",
        "Shape: red cells are round.",
        "Size: they are small.",
    ]


def test_one_sentence_splitter() -> None:
    assert split_sentences("Dr. J. Smith came. He left! Why? Ok") == [
        "Dr. J. Smith came.",
        "He left!",
        "Why?",
        "Ok",
    ]
    assert split_sentences("one\ntwo") == ["one", "two"]
    assert split_sentences("one\ntwo", line_breaks=False) == ["one\ntwo"]
    text = "  First one.  Second, e.g. this. "
    assert [text[a:b] for a, b in sentence_spans(text)] == ["First one.", "Second, e.g. this."]


def test_embedding_cache_reuses_vectors_and_stays_bounded() -> None:
    from perimeter.retrieval.verifier import CachedEmbed

    calls: list[list[str]] = []

    def embed(texts: Sequence[str]) -> list[list[float]]:
        calls.append(list(texts))
        return [[float(len(t))] for t in texts]

    cached = CachedEmbed(embed, max_items=2)
    assert cached(["a", "bb", "a"]) == [[1.0], [2.0], [1.0]]
    assert cached(["bb"]) == [[2.0]]
    assert calls == [["a", "bb"]]  # each text embedded once, repeats served from the cache
    cached(["ccc"])  # evicts the least recently used ("a")
    cached(["a"])
    assert calls[-1] == ["a"]


def test_shipped_score_ranks_new_content_above_a_copy_and_decides_only_with_a_threshold() -> None:
    from perimeter.retrieval.verifier import ClaimVerifier

    sources = [ZEPHYR.text]
    question = "Why was Project Zephyr launched?"
    copy = "Project Zephyr was launched in Oslo in 2019 by Ingrid Berg."
    # Half of its content words are in no source: under the novelty limit, so the checks pass.
    new = "Project Zephyr was launched to improve weather forecasting."
    default = ClaimVerifier().verify([copy, new], sources, question)
    assert [v.failed_checks for v in default] == [[], []]
    assert all(v.supported for v in default)  # no threshold by default: the checks decide
    p_copy, p_new = (v.probability for v in default)
    assert p_copy < 0.05 < p_new
    strict = ClaimVerifier(threshold=(p_copy + p_new) / 2).verify([copy, new], sources, question)
    assert strict[0].supported
    assert not strict[1].supported
    assert strict[1].reasons == ["the sources do not state this"]
