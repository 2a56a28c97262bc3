"""Retrieval metrics, computed by ranx: no hand-written metric code to get subtly wrong.

ranx compiles its numba kernels on first use (tens of seconds once; numba caches them on disk
afterwards), so it is imported inside the function, never at module import.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

# ranx metric name -> the short column name reports use
METRICS: dict[str, str] = {
    "ndcg@10": "nDCG@10",
    "recall@10": "R@10",
    "recall@100": "R@100",
    "mrr@10": "MRR@10",
}


def evaluate_run(
    qrels: Mapping[str, Mapping[str, int]],
    run: Mapping[str, Mapping[str, float]],
    extra: Sequence[str] = (),
) -> dict[str, float]:
    """Mean ndcg@10, recall@10, recall@100 and mrr@10 over the judged queries, and any
    ``extra`` ranx metrics (e.g. "ndcg@5").

    A judged query missing from the run counts as a total miss (0), and run queries without
    judgments are ignored (ranx ``make_comparable``), so a system cannot look better by not
    answering.
    """
    from ranx import Qrels, Run, evaluate

    # Zero-score rows mean "judged not relevant": dropped, so no metric can count them relevant.
    judged = {
        q: positive
        for q, rels in qrels.items()
        if (positive := {d: int(v) for d, v in rels.items() if v > 0})
    }
    if not judged:
        raise ValueError("no judged query: nothing to evaluate")
    names = list(METRICS) + [m for m in extra if m not in METRICS]
    ranked = {q: {d: float(s) for d, s in docs.items()} for q, docs in run.items()}
    if not any(ranked.values()):
        # ranx cannot build a Run without a single document; every judged query missed: 0.
        return dict.fromkeys(names, 0.0)
    with warnings.catch_warnings():
        # numba warns about a uint64→int64 cast inside ranx's own kernels; not ours to fix.
        warnings.simplefilter("ignore")
        scores = evaluate(
            Qrels(judged),
            Run(ranked),
            names,
            make_comparable=True,
        )
    if not isinstance(scores, dict):  # one metric returns a bare float; we always ask for four+
        raise TypeError(f"unexpected ranx result {scores!r}")
    return {name: float(value) for name, value in scores.items()}
