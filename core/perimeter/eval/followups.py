"""Follow-up retrieval evaluation: does a follow-up asked through the conversation retrieve as
well as its written-out standalone form, and how much better than the follow-up asked alone?

The set (``tests/data/cisi_followups.jsonl``) holds pairs built from CISI queries: a first
question on the query's topic, a follow-up that leans on it (a pronoun, an ellipsis, "what about
..."), the standalone form of the follow-up written out by hand, and the CISI query id whose
relevance judgments score all three. Three runs over the same system, one call each:

* ``standalone``: the written-out form, searched as is;
* ``conversation``: the follow-up after the first question, through
  :class:`~perimeter.retrieval.conversation.ConversationRewriter` (what ``/v1/query`` with a
  ``conversation_id`` and ``/v1/chat/completions`` with history search for);
* ``alone``: the follow-up searched without its history.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from perimeter.eval.metrics import evaluate_run
from perimeter.retrieval.conversation import ConversationRewriter, Turn
from perimeter.retrieval.search import NO_CONTEXT, SearchContext

FORMS = ("standalone", "conversation", "alone")


class FollowUpSearchSystem(Protocol):
    """A search system that can also search a follow-up's earlier turns beside it
    (:class:`~perimeter.eval.pipeline_system.PipelineSearchSystem`)."""

    def search(
        self, query: str, mode: str, k: int, context: SearchContext = NO_CONTEXT
    ) -> list[tuple[str, float]]: ...


@dataclass(frozen=True, slots=True)
class FollowUpPair:
    id: str
    cisi_query_id: str
    kind: str
    first: str
    follow_up: str
    standalone: str


def load_followups(path: Path | str) -> list[FollowUpPair]:
    pairs = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        try:
            pairs.append(
                FollowUpPair(
                    id=str(row["id"]),
                    # "query_id" in sets on other collections (cacm_followups.jsonl)
                    cisi_query_id=str(
                        row["query_id"] if "query_id" in row else row["cisi_query_id"]
                    ),
                    kind=str(row.get("kind", "")),
                    first=str(row["first"]),
                    follow_up=str(row["follow_up"]),
                    standalone=str(row["standalone"]),
                )
            )
        except KeyError as exc:
            raise ValueError(f"{path}:{n}: missing field {exc}") from exc
    return pairs


@dataclass(slots=True)
class FollowUpReport:
    pairs: int
    k: int
    mode: str
    rewrite: str  # "carry" or "llm"
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # form -> metric -> value
    per_pair_ndcg: dict[str, dict[str, float]] = field(default_factory=dict)  # form -> pair -> v
    rewrite_llm_ms: list[float] = field(default_factory=list)  # per turn
    rewrite_ms: list[float] = field(default_factory=list)  # per turn, all of the rewrite
    methods: dict[str, int] = field(default_factory=dict)
    queries: dict[str, str] = field(default_factory=dict)  # pair -> conversation search query

    def ratio(self, a: str, b: str, metric: str = "ndcg@10") -> float:
        denominator = self.metrics[b][metric]
        return self.metrics[a][metric] / denominator if denominator else float("inf")

    def to_table(self) -> str:
        lines = [
            f"follow-ups: {self.pairs} pairs, mode {self.mode}, rewrite {self.rewrite}, k {self.k}",
            "| form | nDCG@10 | R@10 | R@100 | MRR@10 |",
            "|---|---:|---:|---:|---:|",
        ]
        for form in FORMS:
            m = self.metrics[form]
            lines.append(
                f"| {form} | {m['ndcg@10']:.3f} | {m['recall@10']:.3f} | "
                f"{m['recall@100']:.3f} | {m['mrr@10']:.3f} |"
            )
        lines.append(
            f"conversation / standalone = {self.ratio('conversation', 'standalone'):.3f}; "
            f"conversation / alone = {self.ratio('conversation', 'alone'):.2f}"
        )
        lines.append(f"rewrite methods: {self.methods}")
        lines.append(
            "rewrite per turn: "
            + _stats("total ms", self.rewrite_ms)
            + "; "
            + _stats("LLM ms", self.rewrite_llm_ms)
        )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "pairs": self.pairs,
            "k": self.k,
            "mode": self.mode,
            "rewrite": self.rewrite,
            "metrics": self.metrics,
            "ratios": {
                "conversation_over_standalone": self.ratio("conversation", "standalone"),
                "conversation_over_alone": self.ratio("conversation", "alone"),
            },
            "methods": self.methods,
            "rewrite_ms": self.rewrite_ms,
            "rewrite_llm_ms": self.rewrite_llm_ms,
            "per_pair_ndcg": self.per_pair_ndcg,
            "queries": self.queries,
        }


def _stats(label: str, values: Sequence[float]) -> str:
    if not values:
        return f"{label}: none"
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return (
        f"{label} p50 {statistics.median(ordered):.1f} / p95 {p95:.1f} / "
        f"mean {statistics.fmean(ordered):.1f}"
    )


def run_followup_eval(
    system: FollowUpSearchSystem,
    pairs: Sequence[FollowUpPair],
    qrels: Mapping[str, Mapping[str, int]],
    rewriter: ConversationRewriter,
    *,
    mode: str = "hybrid",
    k: int = 100,
) -> FollowUpReport:
    """Search the three forms of every pair (the system is already indexed)."""
    judged = [p for p in pairs if qrels.get(p.cisi_query_id)]
    if not judged:
        raise ValueError("no pair has judgments for its CISI query")
    report = FollowUpReport(
        pairs=len(judged), k=k, mode=mode, rewrite="llm" if rewriter.uses_llm else "carry"
    )
    pair_qrels = {p.id: dict(qrels[p.cisi_query_id]) for p in judged}
    runs: dict[str, dict[str, dict[str, float]]] = {form: {} for form in FORMS}
    for p in judged:
        t0 = time.perf_counter()
        rewrite = rewriter.rewrite(p.follow_up, [Turn(question=p.first)])
        report.rewrite_ms.append((time.perf_counter() - t0) * 1000)
        report.rewrite_llm_ms.append(rewrite.llm_ms)
        report.methods[rewrite.method] = report.methods.get(rewrite.method, 0) + 1
        report.queries[p.id] = rewrite.search_query
        runs["standalone"][p.id] = dict(system.search(p.standalone, mode, k))
        runs["conversation"][p.id] = dict(
            system.search(rewrite.search_query, mode, k, rewrite.context)
        )
        runs["alone"][p.id] = dict(system.search(p.follow_up, mode, k))
    for form in FORMS:
        report.metrics[form] = evaluate_run(pair_qrels, runs[form])
        report.per_pair_ndcg[form] = {
            p.id: evaluate_run({p.id: pair_qrels[p.id]}, {p.id: runs[form][p.id]})["ndcg@10"]
            for p in judged
        }
    return report
