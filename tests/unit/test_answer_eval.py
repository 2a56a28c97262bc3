from __future__ import annotations

from pathlib import Path

import pytest

from perimeter.eval.answers import QAItem, load_qa, score


def reply(answer: str, files: list[str], abstained: bool = False, grounded: bool = True) -> dict:
    return {
        "answer": answer,
        "abstained": abstained,
        "grounded": grounded,
        "citations": [{"filename": f} for f in files],
    }


@pytest.mark.unit
def test_scores_containment_citation_precision_and_abstention() -> None:
    items = [
        QAItem("code?", ["7429"], ["zephyr.pdf"]),
        QAItem("budget?", ["1.2 million"], ["budget.md"]),
        QAItem("capital of Peru?", []),
        QAItem("leave days?", ["28 days"], ["hr.docx"]),
    ]
    report = score(
        items,
        [
            reply("The code is 7429.", ["zephyr.pdf", "budget.md"]),
            reply("It is 1.2   Million euros.", ["budget.md"], grounded=False),
            reply("I could not find this in the documents.", [], abstained=True),
            reply("I could not find this in the documents.", [], abstained=True),
        ],
    )
    assert report.answer_containment == pytest.approx(2 / 3)
    assert report.citation_precision == pytest.approx(2 / 3)  # 2 of 3 citations are right
    assert report.abstention_rate == pytest.approx(0.5)
    assert report.correct_abstention == 1.0
    assert report.false_abstention == pytest.approx(1 / 3)
    assert report.grounded_rate == pytest.approx(0.5)
    assert "| answer containment | 0.667 |" in report.to_table()


@pytest.mark.integration  # writes files
def test_loads_jsonl_and_rejects_garbage(tmp_path: Path) -> None:
    good = tmp_path / "qa.jsonl"
    good.write_text(
        '{"question": "q", "answer": "a", "documents": ["d.pdf"]}\n\n{"question": "u"}\n'
    )
    items = load_qa(good)
    assert items == [QAItem("q", ["a"], ["d.pdf"]), QAItem("u", [])]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"answers": ["x"]}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:1"):
        load_qa(bad)
