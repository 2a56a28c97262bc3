"""`perimeter eval groundedness`: rows in, precision / recall / F1 of "hallucinated" out."""

from __future__ import annotations

import json
import socket
from collections.abc import Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner

from perimeter.cli import app
from perimeter.domain import ScoredChunk
from perimeter.eval.groundedness import load_rows, run_groundedness_eval
from perimeter.retrieval.citations import Attribution
from perimeter.retrieval.llm_check import llm_recheck
from perimeter.retrieval.verifier import ClaimVerifier
from perimeter.settings import get_settings
from tests.scripted_llm import ScriptedLLM

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


def test_the_llm_recheck_runs_on_what_the_checks_passed(tmp_path: Path) -> None:
    # The judge rejects one claim: the recheck's plumbing is under test, not a model.
    judge = ScriptedLLM(
        lambda prompt: "no" if "Claim: The launch code was set" in prompt else "yes"
    )

    def recheck(attr: Attribution, chunks: Sequence[ScoredChunk]) -> int:
        return llm_recheck(attr, chunks, judge)

    report = run_groundedness_eval(
        load_rows(write(tmp_path, ROWS)), ClaimVerifier(), recheck=recheck
    )
    # The checks caught 7492 on their own; the judge turns the third answer's false negative
    # into a catch, and is asked only about the sentences the checks passed.
    assert (report.tp, report.fp, report.fn, report.tn) == (2, 0, 0, 1)
    assert report.llm_calls == 2 and len(judge.asked) == 2
    assert not any("7492" in m[-1].content.split("Claim: ")[1] for m in judge.asked)
    assert "LLM recheck        2 calls" in report.to_table()


def test_cli_llm_verification_names_an_unreachable_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("PERIMETER_LLM__BASE_URL", f"http://127.0.0.1:{port}/v1")
    monkeypatch.setenv("PERIMETER_LLM__MAX_RETRIES", "0")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(
            app,
            ["eval", "groundedness", "--data", str(write(tmp_path, ROWS)), "--llm-verification"],
        )
    finally:
        get_settings.cache_clear()
    assert result.exit_code != 0
    assert f"cannot reach the LLM at http://127.0.0.1:{port}/v1" in result.output
    assert "Traceback" not in result.output
