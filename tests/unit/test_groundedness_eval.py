"""`perimeter eval groundedness`: rows in, precision / recall / F1 of "hallucinated" out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from perimeter.cli import app
from perimeter.eval.groundedness import load_rows, run_groundedness_eval
from perimeter.retrieval.verifier import ClaimVerifier

pytestmark = pytest.mark.unit

SOURCE = "The launch code for Project Zephyr is 7429. It was set in 2019."
ROWS = [
    {"question": "Code?", "sources": [SOURCE], "answer": "The code is 7429.", "label": "supported"},
    {
        "question": "Code?",
        "sources": [SOURCE],
        "answer": "The code is 7492.",
        "label": "hallucinated",
    },
    {
        "question": "When?",
        "sources": [SOURCE],
        "answer": "The launch code was set in 2019.",
        "label": "hallucinated",  # a label the verifier disagrees with: a false negative
    },
]


def write(tmp_path: Path, rows: list[object]) -> Path:
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_report_counts_the_hallucinated_class(tmp_path: Path) -> None:
    report = run_groundedness_eval(load_rows(write(tmp_path, ROWS)), ClaimVerifier())
    assert (report.tp, report.fp, report.fn, report.tn) == (1, 0, 1, 1)
    assert report.precision == 1.0 and report.recall == 0.5
    assert report.f1 == pytest.approx(2 / 3)
    assert report.accuracy == pytest.approx(2 / 3)
    assert report.predictions[1]["unsupported"] == ["The code is 7492."]


def test_cli_prints_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    result = CliRunner().invoke(
        app, ["eval", "groundedness", "--data", str(write(tmp_path, ROWS)), "--json-out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "F1                 0.667" in result.output
    assert json.loads(out.read_text())["f1"] == pytest.approx(0.6667)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"question": "q", "answer": "a", "label": "supported"}, "missing sources"),
        ({"question": "q", "sources": "s", "answer": "a", "label": "supported"}, "list of strings"),
        ({"question": "q", "sources": [], "answer": "a", "label": "maybe"}, "label must be"),
    ],
)
def test_malformed_rows_name_their_line(tmp_path: Path, row: object, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        load_rows(write(tmp_path, [ROWS[0], row]))
    assert ":2:" in str(info.value)
