"""Retrieval evaluation: our system per search mode and the baselines, on one data set, one run.

Reporting the baselines from the same run (same slice, same qrels, same metric code) is the point:
a number for our pipeline means little unless BM25 and plain dense retrieval sit next to it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

from perimeter.eval import baselines
from perimeter.eval.beir import CorpusDoc
from perimeter.eval.metrics import METRICS, evaluate_run

SEARCH_MODES = ("dense", "sparse", "hybrid")
BASELINES = ("bm25", "dense", "rrf")


@runtime_checkable
class SearchSystem(Protocol):
    """What the harness needs from a system under test."""

    def index(self, docs: Sequence[CorpusDoc]) -> None:
        """Ingest the documents; returns once all are searchable."""
        ...

    def search(self, query: str, mode: str, k: int) -> list[tuple[str, float]]:
        """Up to ``k`` (corpus doc id, score), best first; ``mode`` in SEARCH_MODES.

        A system that returns chunks maps them to their document (best chunk per document).
        """
        ...


@dataclass(frozen=True, slots=True)
class EvalRow:
    system: str
    mode: str
    metrics: dict[str, float]
    seconds: float  # wall time of the retrieval for all queries (baselines: including indexing)


@dataclass(slots=True)
class EvalReport:
    dataset: str
    documents: int
    queries: int
    k: int
    rows: list[EvalRow] = field(default_factory=list)
    index_seconds: float | None = None  # the system's index() call, when a system was given

    def row(self, system: str, mode: str) -> EvalRow:
        for r in self.rows:
            if r.system == system and r.mode == mode:
                return r
        raise KeyError(f"{system}/{mode}")

    def to_table(self) -> str:
        """Markdown: one row per system/mode, one column per metric."""
        header = "| system / mode | " + " | ".join(METRICS.values()) + " |"
        rule = "|---|" + "---:|" * len(METRICS)
        lines = [
            f"{self.dataset}: {self.documents} documents, {self.queries} judged queries",
            "",
            header,
            rule,
        ]
        for r in self.rows:
            cells = " | ".join(f"{r.metrics[m]:.3f}" for m in METRICS)
            lines.append(f"| {r.system} / {r.mode} | {cells} |")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)


@dataclass(frozen=True, slots=True)
class EvalSlice:
    corpus: list[CorpusDoc]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def slice_dataset(
    corpus: Sequence[CorpusDoc],
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
    max_queries: int | None = None,
    max_docs: int | None = None,
) -> EvalSlice:
    """The judged queries (the first ``max_queries`` in query order) and the corpus to search.

    With ``max_docs``, the corpus keeps every document judged relevant for a kept query and is
    filled up to ``max_docs`` with other documents in corpus order (distractors), so a small CI
    slice still has its answers in the index. Judgments pointing outside the corpus are dropped.
    """
    judged = [q for q in queries if any(v > 0 for v in qrels.get(q, {}).values())]
    if max_queries is not None:
        judged = judged[: max(0, max_queries)]
    kept_queries = {q: queries[q] for q in judged}
    docs = list(corpus)
    if max_docs is not None:
        needed = {d for q in judged for d, v in qrels[q].items() if v > 0}
        room = max(0, max_docs - len(needed))
        extra: set[str] = set()
        for d in docs:
            if len(extra) >= room:
                break
            if d.id not in needed:
                extra.add(d.id)
        docs = [d for d in docs if d.id in needed or d.id in extra]
    doc_ids = {d.id for d in docs}
    kept_qrels = {q: {d: int(v) for d, v in qrels[q].items() if d in doc_ids} for q in judged}
    return EvalSlice(corpus=docs, queries=kept_queries, qrels=kept_qrels)


def run_retrieval_eval(
    corpus: Sequence[CorpusDoc],
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
    system: SearchSystem | None = None,
    modes: Iterable[str] = SEARCH_MODES,
    k: int = 100,
    *,
    max_queries: int | None = None,
    max_docs: int | None = None,
    include_baselines: Iterable[str] = BASELINES,
    system_name: str | None = None,
    dataset: str = "dataset",
    dense_model: str = baselines.DEFAULT_DENSE_MODEL,
    dense_encoder: Any | None = None,
) -> EvalReport:
    """Evaluate the baselines and, when given, ``system`` in each of ``modes`` on one slice.

    ``k``: results per query asked of every system (>= 100 for R@100 to mean anything).
    ``dense_encoder``: an already loaded SentenceTransformer for the dense baseline, so a caller
    evaluating several sets loads it once.
    """
    modes = tuple(modes)
    wanted = tuple(include_baselines)
    for m in modes:
        if m not in SEARCH_MODES:
            raise ValueError(f"unknown search mode {m!r}; expected one of {SEARCH_MODES}")
    for bl in wanted:
        if bl not in BASELINES:
            raise ValueError(f"unknown baseline {bl!r}; expected one of {BASELINES}")
    data = slice_dataset(corpus, queries, qrels, max_queries=max_queries, max_docs=max_docs)
    if not data.queries:
        raise ValueError("no judged query in the slice: nothing to evaluate")
    report = EvalReport(dataset=dataset, documents=len(data.corpus), queries=len(data.queries), k=k)

    bl_runs: dict[str, baselines.Run] = {}
    bl_seconds: dict[str, float] = {}
    if "bm25" in wanted or "rrf" in wanted:
        started = time.perf_counter()
        bl_runs["bm25"] = baselines.bm25_run(data.corpus, data.queries, top_k=k)
        bl_seconds["bm25"] = time.perf_counter() - started
    if "dense" in wanted or "rrf" in wanted:
        started = time.perf_counter()
        bl_runs["dense"] = baselines.dense_run(
            data.corpus, data.queries, top_k=k, model=dense_model, encoder=dense_encoder
        )
        bl_seconds["dense"] = time.perf_counter() - started
    if "rrf" in wanted:
        started = time.perf_counter()
        bl_runs["rrf"] = baselines.rrf_fuse([bl_runs["bm25"], bl_runs["dense"]], top_k=k)
        bl_seconds["rrf"] = bl_seconds["bm25"] + bl_seconds["dense"] + time.perf_counter() - started
    labels = {"bm25": "bm25+stem", "dense": "minilm-exact", "rrf": "rrf(bm25,dense)"}
    for bl in wanted:
        report.rows.append(
            EvalRow(
                system="baseline",
                mode=labels[bl],
                metrics=evaluate_run(data.qrels, bl_runs[bl]),
                seconds=round(bl_seconds[bl], 3),
            )
        )

    if system is not None and modes:
        name = system_name or getattr(system, "name", None) or type(system).__name__
        started = time.perf_counter()
        system.index(data.corpus)
        report.index_seconds = round(time.perf_counter() - started, 3)
        for mode in modes:
            started = time.perf_counter()
            run = {
                qid: _as_ranking(system.search(text, mode, k)) for qid, text in data.queries.items()
            }
            report.rows.append(
                EvalRow(
                    system=str(name),
                    mode=mode,
                    metrics=evaluate_run(data.qrels, run),
                    seconds=round(time.perf_counter() - started, 3),
                )
            )
    return report


RRF_BASELINE = ("baseline", "rrf(bm25,dense)")


def side_by_side(reports: Sequence[EvalReport], metric: str = "ndcg@10") -> str:
    """Markdown: one row per system/mode, one column per data set, plus each row's gain over
    that set's plain RRF baseline and the worst such gain across the sets.

    Settings are shipped for collections nobody tuned them on, so the column that matters is the
    worst one: a row that only wins on some sets has not shown it generalises.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {tuple(METRICS)}")
    keys = list(dict.fromkeys((r.system, r.mode) for rep in reports for r in rep.rows))
    has_rrf = all(any((r.system, r.mode) == RRF_BASELINE for r in rep.rows) for rep in reports)
    label = METRICS[metric]
    cols = [f"{rep.dataset} {label}" for rep in reports]
    if has_rrf:
        cols += [f"{rep.dataset} vs RRF" for rep in reports] + ["worst vs RRF"]
    lines = [
        "| system / mode | " + " | ".join(cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]
    for system, mode in keys:
        values: list[float | None] = []
        for rep in reports:
            try:
                values.append(rep.row(system, mode).metrics[metric])
            except KeyError:
                values.append(None)
        cells = ["—" if v is None else f"{v:.3f}" for v in values]
        if has_rrf:
            gains = [
                None if v is None else v - rep.row(*RRF_BASELINE).metrics[metric]
                for v, rep in zip(values, reports, strict=True)
            ]
            cells += ["—" if g is None else f"{g:+.3f}" for g in gains]
            known = [g for g in gains if g is not None]
            cells.append(f"{min(known):+.3f}" if known and len(known) == len(gains) else "—")
        lines.append(f"| {system} / {mode} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _as_ranking(hits: Sequence[tuple[str, float]]) -> dict[str, float]:
    """The system's order as strictly decreasing scores, first occurrence of a doc id kept.

    ranx ranks by score: equal scores would be ordered arbitrarily and a score scale that is not
    monotonic in the returned order (it should be, but the contract is "best first") would
    reorder. Position-derived scores make the evaluated ranking exactly the returned one.
    """
    ids = list(dict.fromkeys(str(doc_id) for doc_id, _ in hits))
    return {doc_id: float(len(ids) - rank) for rank, doc_id in enumerate(ids)}
