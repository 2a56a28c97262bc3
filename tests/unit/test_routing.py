"""The model router: rules (policy) first, in order, then the collection's model, then the
default; and the rules as operators write them in PERIMETER_LLM__ROUTES."""

from __future__ import annotations

import pytest

from perimeter.domain import KnowledgeBase
from perimeter.retrieval.routing import ModelRouter, RoutingRule
from perimeter.settings import Settings

pytestmark = pytest.mark.unit

PLAIN = KnowledgeBase(tenant_id="t", name="docs")
LEGAL = KnowledgeBase(tenant_id="t", name="legal", llm_model="legal-lora")
SECRET = KnowledgeBase(tenant_id="t", name="hr", sensitivity="restricted")


def router() -> ModelRouter:
    return ModelRouter(
        [
            RoutingRule(model="small-onprem", sensitivity=frozenset({"restricted"})),
            RoutingRule(model="large", min_question_chars=200),
            RoutingRule(model="tiny", max_question_chars=20, collections=frozenset({"docs"})),
        ],
        default_model="medium",
    )


def test_sensitivity_rule_wins_over_length_and_collection_model() -> None:
    choice = router().choose("x" * 500, SECRET)
    assert choice.model == "small-onprem"
    assert choice.reason == "rule 1: sensitivity in ['restricted']"


def test_length_rules_send_long_and_short_questions_apart() -> None:
    r = router()
    assert r.choose("y" * 200, PLAIN).model == "large"  # the bound is inclusive
    assert r.choose("y" * 199, PLAIN).model == "medium"
    assert r.choose("short question?", PLAIN).model == "tiny"
    # The short-question rule is limited to the "docs" collection.
    assert r.choose("short question?", KnowledgeBase(tenant_id="t", name="other")).model == (
        "medium"
    )


def test_collection_model_then_default_when_no_rule_matches() -> None:
    r = router()
    assert r.choose("What is clause 4 about, in this contract?", LEGAL).model == "legal-lora"
    assert r.choose("What is clause 4 about, in this contract?", LEGAL).reason == (
        "collection 'legal'"
    )
    choice = r.choose("A question of ordinary length here", PLAIN)
    assert (choice.model, choice.reason) == ("medium", "default")
    assert ModelRouter([], "m").choose("anything", PLAIN).model == "m"


def test_routes_parse_from_the_environment_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "PERIMETER_LLM__ROUTES",
        '[{"model": "llama-70b", "min_question_chars": 400}, '
        '{"model": "guard", "sensitivity": ["restricted", "phi"], "collections": ["hr"]}]',
    )
    routes = Settings().llm.routes
    assert [r.model for r in routes] == ["llama-70b", "guard"]
    assert routes[0].min_question_chars == 400 and routes[0].collections is None
    assert routes[1].sensitivity == ["restricted", "phi"]


def test_a_route_without_a_model_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    monkeypatch.setenv("PERIMETER_LLM__ROUTES", '[{"min_question_chars": 10}]')
    with pytest.raises(ValidationError):
        Settings()
