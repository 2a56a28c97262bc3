"""evaluate_run: ranx metrics over judged queries, extra metrics on request."""

from __future__ import annotations

import math

import pytest

from perimeter.eval.metrics import METRICS, evaluate_run

pytestmark = pytest.mark.integration  # ranx compiles numba kernels on first use


def _dcg(gains: list[int]) -> float:
    return sum(g / math.log2(i + 2) for i, g in enumerate(gains))


def test_extra_metrics_come_beside_the_standard_ones() -> None:
    qrels = {"q1": {"a": 1, "b": 1}, "q2": {"c": 1}}
    # q1: relevant at ranks 1 and 6; q2 is not answered and counts as a total miss.
    run = {"q1": {"a": 10.0, "x1": 9.0, "x2": 8.0, "x3": 7.0, "x4": 6.0, "b": 5.0}}
    out = evaluate_run(qrels, run, extra=("ndcg@5",))
    assert set(out) == set(METRICS) | {"ndcg@5"}
    ideal = _dcg([1, 1])
    assert out["ndcg@5"] == pytest.approx((_dcg([1]) / ideal + 0.0) / 2)
    assert out["ndcg@10"] == pytest.approx((_dcg([1, 0, 0, 0, 0, 1]) / ideal + 0.0) / 2)
    assert evaluate_run(qrels, run) == {k: v for k, v in out.items() if k in METRICS}


def test_an_empty_run_scores_zero_on_every_metric_asked() -> None:
    assert evaluate_run({"q": {"a": 1}}, {"q": {}}, extra=("ndcg@5",)) == dict.fromkeys(
        [*METRICS, "ndcg@5"], 0.0
    )
