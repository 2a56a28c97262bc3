"""Groundedness evaluation: does the answer verifier flag the answers people marked as
hallucinated?

Rows are ``{question, sources: [str], answer, label: supported|hallucinated}`` (JSONL; other
keys are ignored). Each answer is verified exactly as the API verifies one
(``perimeter.retrieval.citations.attribute`` with the deployment's verifier settings): an
answer with any unsupported sentence is predicted "hallucinated". Reported: precision /
recall / F1 of the "hallucinated" class, accuracy, and verification latency per answer.
With ``recheck`` (the API's optional LLM pass, ``answers.llm_verification``), the sentences
the checks passed are also put to the LLM, and its time counts in the latency.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from perimeter.domain import ScoredChunk
from perimeter.retrieval.citations import Attribution, attribute
from perimeter.retrieval.verifier import ClaimVerifier

LABELS = ("supported", "hallucinated")
# A second pass over an attribution (the LLM recheck): marks sentences unsupported in place and
# returns the number of LLM calls it made.
Recheck = Callable[[Attribution, Sequence[ScoredChunk]], int]


@dataclass(frozen=True, slots=True)
class GroundednessRow:
    question: str
    sources: list[str]
    answer: str
    label: str
    id: str = ""


@dataclass(slots=True)
class GroundednessReport:
    rows: int
    hallucinated: int
    tp: int
    fp: int
    fn: int
    tn: int
    latency_ms_p50: float
    latency_ms_p95: float
    sources_per_answer: float
    predictions: list[dict[str, object]] = field(default_factory=list)
    llm_calls: int = 0  # the LLM recheck's calls, over all answers (0 without it)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def accuracy(self) -> float:
        return (self.tp + self.tn) / self.rows if self.rows else 0.0

    def to_table(self) -> str:
        lines = [
            f"answers            {self.rows} ({self.hallucinated} labelled hallucinated)",
            f"precision          {self.precision:.3f}   (of answers flagged, share hallucinated)",
            f"recall             {self.recall:.3f}   (of hallucinated answers, share flagged)",
            f"F1                 {self.f1:.3f}",
            f"accuracy           {self.accuracy:.3f}",
            f"confusion          tp={self.tp} fp={self.fp} fn={self.fn} tn={self.tn}",
            f"verification ms    p50 {self.latency_ms_p50:.1f}  p95 {self.latency_ms_p95:.1f}  "
            f"({self.sources_per_answer:.1f} sources per answer)",
        ]
        if self.llm_calls:
            lines.append(
                f"LLM recheck        {self.llm_calls} calls "
                f"({self.llm_calls / max(1, self.rows):.1f} per answer, in the latency above)"
            )
        return "\n".join(lines)

    def to_json(self) -> str:
        data = asdict(self)
        data.update(
            precision=round(self.precision, 4),
            recall=round(self.recall, 4),
            f1=round(self.f1, 4),
            accuracy=round(self.accuracy, 4),
        )
        return json.dumps(data, indent=2)


def load_rows(path: Path) -> list[GroundednessRow]:
    """Raises ValueError naming the line of a malformed row."""
    rows: list[GroundednessRow] = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{n}: not JSON ({exc.msg})") from exc
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{n}: expected an object")
            missing = [k for k in ("question", "sources", "answer", "label") if k not in obj]
            if missing:
                raise ValueError(f"{path}:{n}: missing {', '.join(missing)}")
            sources = obj["sources"]
            if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
                raise ValueError(f"{path}:{n}: sources must be a list of strings")
            if obj["label"] not in LABELS:
                raise ValueError(f"{path}:{n}: label must be one of {', '.join(LABELS)}")
            if not isinstance(obj["question"], str) or not isinstance(obj["answer"], str):
                raise ValueError(f"{path}:{n}: question and answer must be strings")
            rows.append(
                GroundednessRow(
                    question=obj["question"],
                    sources=list(sources),
                    answer=obj["answer"],
                    label=obj["label"],
                    id=str(obj.get("id", n)),
                )
            )
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


def as_chunks(sources: Sequence[str]) -> list[ScoredChunk]:
    return [
        ScoredChunk(f"s{i}", f"source-{i}", 0, text, f"source-{i}", None, None, 1.0)
        for i, text in enumerate(sources, start=1)
    ]


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[k]


def run_groundedness_eval(
    rows: Iterable[GroundednessRow],
    verifier: ClaimVerifier,
    progress: Callable[[int], None] | None = None,
    recheck: Recheck | None = None,
) -> GroundednessReport:
    tp = fp = fn = tn = calls = 0
    latencies: list[float] = []
    n_sources: list[int] = []
    predictions: list[dict[str, object]] = []
    for i, row in enumerate(rows, start=1):
        t0 = time.perf_counter()
        chunks = as_chunks(row.sources)
        attr = attribute(row.answer, chunks, question=row.question, verifier=verifier)
        if recheck is not None and not attr.abstained:  # as the API: abstentions are not asked
            calls += recheck(attr, chunks)
        latencies.append((time.perf_counter() - t0) * 1000)
        n_sources.append(len(row.sources))
        flagged = bool(attr.unsupported)
        truth = row.label == "hallucinated"
        tp += flagged and truth
        fp += flagged and not truth
        fn += (not flagged) and truth
        tn += (not flagged) and not truth
        predictions.append(
            {"id": row.id, "label": row.label, "flagged": flagged, "unsupported": attr.unsupported}
        )
        if progress is not None:
            progress(i)
    return GroundednessReport(
        rows=len(latencies),
        hallucinated=tp + fn,
        tp=tp,
        fp=fp,
        fn=fn,
        tn=tn,
        latency_ms_p50=round(statistics.median(latencies), 2) if latencies else 0.0,
        latency_ms_p95=round(_percentile(latencies, 0.95), 2),
        sources_per_answer=round(statistics.fmean(n_sources), 2) if n_sources else 0.0,
        predictions=predictions,
        llm_calls=calls,
    )
