"""Which LLM answers a question: the router pattern behind one OpenAI-compatible endpoint.

vLLM serves several models (or one base model with LoRA adapters, each under its own name) at
one URL, so choosing a model is choosing the ``model`` field of the request. Operators write
rules (``PERIMETER_LLM__ROUTES``): a long question to the large model, a restricted knowledge
base to the model cleared for it. Rules come first because they are policy; then the knowledge
base's own model; then the deployment's default.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from perimeter.domain import KnowledgeBase


@dataclass(frozen=True, slots=True)
class RoutingRule:
    model: str
    collections: frozenset[str] | None = None
    sensitivity: frozenset[str] | None = None
    min_question_chars: int | None = None
    max_question_chars: int | None = None

    def matches(self, question: str, kb: KnowledgeBase) -> bool:
        n = len(question)
        return (
            (self.collections is None or kb.name in self.collections)
            and (self.sensitivity is None or kb.sensitivity in self.sensitivity)
            and (self.min_question_chars is None or n >= self.min_question_chars)
            and (self.max_question_chars is None or n <= self.max_question_chars)
        )

    def describe(self) -> str:
        parts = []
        if self.collections is not None:
            parts.append(f"collection in {sorted(self.collections)}")
        if self.sensitivity is not None:
            parts.append(f"sensitivity in {sorted(self.sensitivity)}")
        if self.min_question_chars is not None:
            parts.append(f"question >= {self.min_question_chars} chars")
        if self.max_question_chars is not None:
            parts.append(f"question <= {self.max_question_chars} chars")
        return " and ".join(parts) or "always"


@dataclass(frozen=True, slots=True)
class ModelChoice:
    model: str
    reason: str  # "rule 1: question >= 400 chars", "collection", "default"


class ModelRouter:
    def __init__(self, rules: Sequence[RoutingRule], default_model: str) -> None:
        self._rules = list(rules)
        self._default = default_model

    @property
    def default_model(self) -> str:
        return self._default

    def choose(self, question: str, kb: KnowledgeBase) -> ModelChoice:
        for i, rule in enumerate(self._rules, start=1):
            if rule.matches(question, kb):
                return ModelChoice(rule.model, f"rule {i}: {rule.describe()}")
        if kb.llm_model:
            return ModelChoice(kb.llm_model, f"collection {kb.name!r}")
        return ModelChoice(self._default, "default")
