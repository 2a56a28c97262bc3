"""Answer evaluation: does the answer contain the gold answer, do its citations point at the right
documents, and does it abstain when (and only when) the documents do not hold the answer.

Input is JSON Lines, one question per line::

    {"question": "...", "answers": ["7429"], "documents": ["zephyr.pdf"]}
    {"question": "...", "answers": []}          # unanswerable: the right reply is to abstain

``answers`` holds acceptable gold strings (matched case-insensitively, whitespace-normalised);
``documents`` the filenames a correct citation may point to.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class QAItem:
    question: str
    answers: list[str]
    documents: list[str] = field(default_factory=list)

    @property
    def answerable(self) -> bool:
        return bool(self.answers)


@dataclass(slots=True)
class ItemResult:
    question: str
    answer: str
    abstained: bool
    contains_gold: bool | None  # None for unanswerable items
    cited: list[str]
    correct_citations: int
    grounded: bool | None


@dataclass(slots=True)
class AnswerReport:
    items: list[ItemResult]
    answer_containment: float  # over answerable items
    citation_precision: float | None  # over citations of items that name their documents
    abstention_rate: float  # over all items
    correct_abstention: float | None  # over unanswerable items
    false_abstention: float | None  # over answerable items
    grounded_rate: float | None  # over non-abstained answers

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def to_table(self) -> str:
        def pct(v: float | None) -> str:
            return "n/a" if v is None else f"{v:.3f}"

        rows = [
            ("questions", str(len(self.items))),
            ("answer containment", pct(self.answer_containment)),
            ("citation precision", pct(self.citation_precision)),
            ("abstention rate", pct(self.abstention_rate)),
            ("correct abstention (unanswerable)", pct(self.correct_abstention)),
            ("false abstention (answerable)", pct(self.false_abstention)),
            ("grounded answers", pct(self.grounded_rate)),
        ]
        lines = ["| metric | value |", "|---|---:|"]
        lines += [f"| {k} | {v} |" for k, v in rows]
        return "\n".join(lines)


def load_qa(path: Path) -> list[QAItem]:
    items = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            answers = raw.get("answers", raw.get("answer", []))
            if isinstance(answers, str):
                answers = [answers]
            items.append(
                QAItem(
                    question=str(raw["question"]),
                    answers=[str(a) for a in answers],
                    documents=[str(d) for d in raw.get("documents", [])],
                )
            )
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{n}: not a QA item ({exc})") from exc
    return items


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _mean(values: Iterable[float]) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def score(items: Sequence[QAItem], responses: Sequence[dict[str, Any]]) -> AnswerReport:
    """``responses`` are POST /v1/query bodies, in the order of ``items``."""
    results: list[ItemResult] = []
    for item, response in zip(items, responses, strict=True):
        answer = response.get("answer") or ""
        cited = [c["filename"] for c in response.get("citations", [])]
        abstained = bool(response.get("abstained"))
        contains = any(_norm(g) in _norm(answer) for g in item.answers) if item.answerable else None
        results.append(
            ItemResult(
                question=item.question,
                answer=answer,
                abstained=abstained,
                contains_gold=contains,
                cited=cited,
                correct_citations=sum(1 for c in cited if c in item.documents),
                grounded=None if abstained else response.get("grounded"),
            )
        )
    answerable = [r for r, i in zip(results, items, strict=True) if i.answerable]
    unanswerable = [r for r, i in zip(results, items, strict=True) if not i.answerable]
    with_docs = [r for r, i in zip(results, items, strict=True) if i.documents and r.cited]
    total_cited = sum(len(r.cited) for r in with_docs)
    return AnswerReport(
        items=results,
        answer_containment=_mean(1.0 if r.contains_gold else 0.0 for r in answerable) or 0.0,
        citation_precision=(
            sum(r.correct_citations for r in with_docs) / total_cited if total_cited else None
        ),
        abstention_rate=_mean(1.0 if r.abstained else 0.0 for r in results) or 0.0,
        correct_abstention=_mean(1.0 if r.abstained else 0.0 for r in unanswerable),
        false_abstention=_mean(1.0 if r.abstained else 0.0 for r in answerable),
        grounded_rate=_mean(1.0 if r.grounded else 0.0 for r in results if r.grounded is not None),
    )


def run_answer_eval(items: Sequence[QAItem], ask: Callable[[str], dict[str, Any]]) -> AnswerReport:
    """Ask every question (``ask`` is e.g. ``PerimeterClient(url).query``) and score the replies."""
    return score(items, [ask(item.question) for item in items])
