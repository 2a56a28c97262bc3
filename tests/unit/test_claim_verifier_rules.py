"""The verifier's format and framing rules (issue #12): each one lets a faithful sentence pass
and still catches the fabricated value it could hide."""

from __future__ import annotations

import pytest

from perimeter.domain import ScoredChunk
from perimeter.retrieval.citations import Attribution, attribute, split_answer
from perimeter.retrieval.claims import extract_claims, normalize_text, without_negated_clauses

pytestmark = pytest.mark.unit


def chunk(text: str, n: int = 1) -> ScoredChunk:
    return ScoredChunk(f"p{n}", f"d{n}", 0, text, f"doc{n}.pdf", 1, None, 1.0)


def check(answer: str, *sources: str, question: str = "") -> Attribution:
    return attribute(
        answer, [chunk(s, i) for i, s in enumerate(sources, start=1)], question=question
    )


def test_typography_is_normalized() -> None:
    assert normalize_text("doesn’t “x” 1–800 4×4 USPS®") == 'doesn\'t "x" 1-800 4x4 USPS'
    # An em dash separates clauses; it does not glue a year to the next word.
    assert "2019 - the" in normalize_text("in 2019—the year")


def test_curly_apostrophe_negation_is_a_negation() -> None:
    source = "The project doesn’t accept external contributions from companies."
    assert check("The project doesn't accept external contributions.", source).grounded
    attr = check("The project accepts external contributions from companies.", source)
    assert attr.grounded is False
    assert any("negat" in r for r in attr.sentences[0].reasons)


def test_hyphenated_identifier_is_one_value() -> None:
    source = "Call the USPS Call Center at 1-800-ASK-USPS to change your address."
    assert "1-800-ask-usps" in extract_claims("Call 1‑800‑ASK‑USPS.").identifiers
    assert check("Call the USPS Call Center at 1–800–ASK–USPS.", source).grounded
    assert check("Call the USPS Call Center at 1-800-ASK-USPX.", source).grounded is False


def test_dimensions_written_apart_are_the_same_size() -> None:
    source = "Cut the two 4 x 4 skids and two pressure-treated 2 by 6s for the rim joists."
    assert check("Cut two 4x4 skids and two 2x6s for the rim joists.", source).grounded
    assert check("Cut two 4x6 skids for the rim joists.", source).grounded is False


def test_url_scheme_and_www_do_not_make_another_page() -> None:
    source = "Search the white pages at http://www.pagesjaunes.fr/pb.cgi?lang=en for a name."
    assert check("Search https://pagesjaunes.fr/pb.cgi?lang=en for a name.", source).grounded
    assert (
        check("Search https://pagesjaunes.fr/pb.cgi?lang=de for a name.", source).grounded is False
    )


def test_month_abbreviation_and_temperature_symbol_back_the_spelled_out_word() -> None:
    source = "Nov. 1: the Stamp Act goes into effect. Nights drop to 20 °F or lower."
    assert check("The Stamp Act went into effect on November 1.", source).grounded
    assert check("The Stamp Act went into effect on December 1.", source).grounded is False
    assert check("Nights drop to 20 degrees Fahrenheit or lower.", source).grounded
    assert check("Nights drop to 20 degrees Celsius or lower.", source).grounded is False


def test_demonym_is_backed_by_its_place_name() -> None:
    source = "Technology has dramatically reshaped the average workplace in America."
    assert check("Technology has reshaped the average American workplace.", source).grounded
    assert (
        check("Technology has reshaped the average Canadian workplace.", source).grounded is False
    )


def test_name_a_source_writes_as_one_token() -> None:
    source = "Visit www.pagesjaunes.fr, the French white pages, and enter the last name."
    assert check("Visit the Pages Jaunes website and enter the last name.", source).grounded
    assert (
        check("Visit the Pages Blanches website and enter the last name.", source).grounded is False
    )


def test_acronym_is_backed_by_its_expansion() -> None:
    source = "The Fair Employment and Housing Act applies to employers with five employees."
    assert check("FEHA applies to employers with five employees.", source).grounded
    assert check("FEPA applies to employers with five employees.", source).grounded is False
    # Lower-case words spell no acronym: they would match one by chance in a long source.
    lower = "the fair employment and housing act applies to employers with five employees."
    assert check("FEHA applies to employers with five employees.", lower).grounded is False


def test_question_subject_may_be_restated_but_a_confirmed_value_is_not_evidence() -> None:
    source = "Preheat an outdoor grill for medium heat and lightly oil the grate."
    answer = "According to allrecipes.com, preheat an outdoor grill for medium heat."
    assert check(answer, source, question="how to grill pork chops, allrecipes.com").grounded
    # A question asking to confirm an identifier does not make it evidence.
    confirm = check(answer, source, question="Does allrecipes.com say to preheat the grill?")
    assert confirm.grounded is False


def test_framing_sentences_are_not_judged() -> None:
    source = "The launch code for Project Zephyr is 7429."
    answer = (
        "Here's my answer based on the given passages:\n"
        "The launch code for Project Zephyr is 7429.\n"
        "Let me know if you have any further questions."
    )
    attr = check(answer, source)
    assert [s.checked for s in attr.sentences] == [False, True, False]
    assert attr.grounded is True


def test_framing_with_a_claim_is_still_checked() -> None:
    source = "The launch code for Project Zephyr is 7429."
    attr = check("Based on the given passages, the launch code is 7492.", source)
    assert [s.checked for s in attr.sentences] == [True]
    assert attr.grounded is False
    # A yes/no answer restates the question's words, and is a claim.
    question = "Does the project accept external contributions?"
    yes = check("Yes, the project accepts external contributions.", source, question=question)
    assert [s.checked for s in yes.sentences] == [True]


def test_a_lead_in_may_restate_the_question_but_not_add_content() -> None:
    question = "what do psa levels mean"
    pieces = split_answer(
        "Based on the passages, PSA levels can be summarized as follows:", question
    )
    assert [p.skip for p in pieces] == [True]
    pieces = split_answer("Based on the passages, PSA levels rise with prostate cancer:", question)
    assert [p.skip for p in pieces] == [False]
    # Values the question holds may be restated; a value it lacks is content.
    question = "where does 1099-patr go on 1040"
    restated = split_answer("Here is where 1099-PATR should go on 1040:", question)
    assert [p.skip for p in restated] == [True]
    added = split_answer("Here is where 1099-PATR should go on 4835:", question)
    assert [p.skip for p in added] == [False]


def test_quoting_the_question_asserts_nothing() -> None:
    question = "where does 1099-patr go on 1040"
    pieces = split_answer(
        'Therefore, the answer to the question "Where does 1099-PATR go on 1040?"', question
    )
    assert [p.skip for p in pieces] == [True]
    # A quotation that is not the question is content.
    pieces = split_answer('Therefore, the answer is "Schedule F of Form 1040".', question)
    assert [p.skip for p in pieces] == [False]


def test_attribution_words_are_not_new_content() -> None:
    source = "Cut large sprouted potatoes into chunks with a sharp knife."
    assert check("Based on the provided passages, cut potatoes into chunks.", source).grounded
    attr = check("Based on the provided passages, soak potatoes overnight in brine.", source)
    assert attr.grounded is False


def test_refusals_and_coverage_notes_are_abstentions() -> None:
    source = "Boil the potatoes for 15 minutes, then move them to an ice bath."
    for sentence in (
        "Unable to answer based on given passages.",
        "However, no specific instructions are provided for peeling.",
        "Without more information, it is difficult to give a more specific definition.",
    ):
        assert [p.skip for p in split_answer(sentence)] == [True], sentence
    # An "abstention" that states a value is checked: the value is a claim.
    stated = check("No information is given on peeling, but it takes 45 minutes.", source)
    assert [s.checked for s in stated.sentences] == [True]
    assert stated.grounded is False
    attr = check(
        "Some people add salt to the water, although this is not mentioned in the passages.",
        source,
    )
    assert [s.checked for s in attr.sentences] == [True]
    assert attr.grounded is False
    assert any("itself says" in r for r in attr.sentences[0].reasons)


def test_a_negation_in_a_clause_the_other_side_lacks_is_no_contradiction() -> None:
    assert without_negated_clauses("Cut them, being careful not to break the sprouts.") == (
        "Cut them, being careful."
    )
    source = (
        "Cut large sprouted potatoes into chunks with two eyes each, being careful not to "
        "break the sprouts."
    )
    assert check("Cut large sprouted potatoes into chunks with two eyes each.", source).grounded
    source = "Make a cut all around the potato, lengthwise, with a sharp paring knife."
    answer = (
        "Make a cut all around the potato lengthwise with a sharp knife, being careful not to "
        "cut deep."
    )
    assert check(answer, source).grounded
    # Asserting the one thing a clause denies is a contradiction, however much else is shared.
    source = "Season the pork chops with salt, pepper and garlic, but not paprika."
    attr = check("Season the pork chops with salt, pepper, garlic and paprika.", source)
    assert attr.grounded is False
    assert any("negation" in r for r in attr.sentences[0].reasons)
    # The same statement denied keeps its conflict (the shared clause is the negated one).
    source = "The project does not accept external contributions from companies."
    assert (
        check("The project accepts external contributions from companies.", source).grounded
        is False
    )


def test_counts_written_as_words_are_values() -> None:
    source = "The ADA applies to employers with fifteen or more employees."
    assert check("The ADA applies to employers with 15 or more employees.", source).grounded
    assert check("The ADA applies to employers with fifteen or more employees.", source).grounded
    assert (
        check("The ADA applies to employers with twenty or more employees.", source).grounded
        is False
    )
    # "two" stays phrasing: it is not held to the sources.
    assert "2" not in extract_claims("There are two ways to apply.").numbers


def test_a_passage_the_sentence_names_must_back_it() -> None:
    zephyr = "Project Zephyr was launched in Oslo in 2019 by Ingrid Berg."
    budget = "The marketing budget for 2025 is 1.2 million euros."
    assert check(
        "As passage 1 states, Ingrid Berg launched Zephyr in Oslo.", zephyr, budget
    ).grounded
    wrong = check("As passage 2 states, Ingrid Berg launched Zephyr in Oslo.", zephyr, budget)
    assert wrong.grounded is False
    assert any("passage 2" in r for r in wrong.sentences[0].reasons)
    missing = check("Ingrid Berg launched Zephyr in Oslo (passage 5).", zephyr, budget)
    assert any("no such source" in r for r in missing.sentences[0].reasons)


def test_a_unit_conversion_of_a_backed_value_is_backed() -> None:
    source = "Tallahassee has an average high of 79 °F and an average low of 56 °F."
    answer = "The average high is 79 °F (26 °C) and the average low is 56 °F (13 °C)."
    assert check(answer, source).grounded
    # A "conversion" that is not one is a new value.
    wrong = check("The average high is 79 °F (30 °C).", source)
    assert wrong.grounded is False
    assert any("30" in r for r in wrong.sentences[0].reasons)
    # The converted-from value must itself be in the sources.
    assert check("The average high is 81 °F (27 °C).", source).grounded is False
