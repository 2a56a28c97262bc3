"""`perimeter eval retrieval --sets`: several collections in one run, side by side with the
baselines. Tiny BEIR folders written by the test; BM25 only, so no model is loaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from perimeter.cli import app
from perimeter.eval.harness import EvalReport, EvalRow, side_by_side

pytestmark = pytest.mark.integration


def _beir(
    folder: Path, docs: dict[str, str], queries: dict[str, str], rels: dict[str, str]
) -> Path:
    folder.mkdir(parents=True)
    with (folder / "corpus.jsonl").open("w") as f:
        for doc_id, text in docs.items():
            f.write(json.dumps({"_id": doc_id, "title": "", "text": text}) + "\n")
    with (folder / "queries.jsonl").open("w") as f:
        for qid, text in queries.items():
            f.write(json.dumps({"_id": qid, "text": text}) + "\n")
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t1" for q, d in rels.items()]
    (folder / "qrels.tsv").write_text("\n".join(lines) + "\n")
    return folder


def _row(system: str, mode: str, ndcg: float) -> EvalRow:
    metrics = {"ndcg@10": ndcg, "recall@10": 0.0, "recall@100": 0.0, "mrr@10": 0.0}
    return EvalRow(system=system, mode=mode, metrics=metrics, seconds=0.0)


def test_side_by_side_reports_gain_and_worst_set() -> None:
    a = EvalReport("a", 10, 2, 100, [_row("baseline", "rrf(bm25,dense)", 0.5)])
    a.rows.append(_row("perimeter", "hybrid", 0.56))
    b = EvalReport("b", 10, 2, 100, [_row("baseline", "rrf(bm25,dense)", 0.4)])
    b.rows.append(_row("perimeter", "hybrid", 0.41))
    table = side_by_side([a, b]).splitlines()
    assert table[0].startswith("| system / mode | a nDCG@10 | b nDCG@10 | a vs RRF | b vs RRF")
    hybrid = next(line for line in table if line.startswith("| perimeter / hybrid"))
    assert hybrid == "| perimeter / hybrid | 0.560 | 0.410 | +0.060 | +0.010 | +0.010 |"
    with pytest.raises(ValueError, match="unknown metric"):
        side_by_side([a], metric="map")


def test_cli_sets_runs_each_collection_side_by_side(tmp_path: Path) -> None:
    first = _beir(
        tmp_path / "first",
        {"d1": "apples and pears", "d2": "ships at sea", "d3": "pears grow on trees"},
        {"q1": "pears", "q2": "sea ships"},
        {"q1": "d1", "q2": "d2"},
    )
    second = _beir(
        tmp_path / "second",
        {"x1": "compilers parse programs", "x2": "sorting algorithms", "x3": "parse trees"},
        {"q1": "sorting"},
        {"q1": "x2"},
    )
    out = tmp_path / "report.json"
    result = CliRunner().invoke(
        app,
        [
            "eval", "retrieval", "--sets", f"one={first},{second}", "--modes", "",
            "--baselines", "bm25", "--json-out", str(out),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "one: 3 documents, 2 judged queries" in result.stdout
    assert "second: 3 documents, 1 judged queries" in result.stdout
    assert "| system / mode | one nDCG@10 | second nDCG@10 |" in result.stdout
    reports = json.loads(out.read_text())
    assert [r["dataset"] for r in reports] == ["one", "second"]
    # BM25 finds the one relevant document first for every query of both sets.
    assert all(r["rows"][0]["metrics"]["ndcg@10"] == pytest.approx(1.0) for r in reports)


def test_cli_sets_rejects_bad_input(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(app, ["eval", "retrieval", "--sets", str(tmp_path / "nope")])
    assert missing.exit_code != 0
    assert "not a BEIR folder" in missing.output
    neither = runner.invoke(app, ["eval", "retrieval", "--modes", ""])
    assert neither.exit_code != 0
    assert "--sets" in neither.output
