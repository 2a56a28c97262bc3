from __future__ import annotations

import json
from pathlib import Path

import pytest

from perimeter.eval.beir import load_beir
from perimeter.eval.smart import convert_smart, parse_rel, parse_smart

ALL = """\
.I 1
.T
18 Editions of the Dewey Decimal
Classifications
.A
Comaromi, J.P.
.W
   The present study is a history of the DEWEY Decimal
Classification.
.X
1	5	1
92	1	1
.I 2
.T 
Use Made of Technical Libraries
.A 
Slater, M.
.A
Other, A.
.W
This report is an analysis of 6300 acts of use
.NET is not a field marker here, .Q neither.
.B
1969
"""

QRY = """\
.I 1
.W
What problems and concerns are there in making up descriptive titles?
.I 7
.T
A query with a title
.A
Someone, S.
.W
    Its abstract is the text.
.B
(1980)
.I 9
.T
Only a title
"""

REL = """\
     1     2	0	0.000000
     1     1	0	0.000000
     2     2	0	0.000000
     2    99	0	0.000000
     3     1	0	0.000000
"""


@pytest.mark.unit
def test_parse_records_and_fields() -> None:
    docs = parse_smart(ALL)
    assert [d.id for d in docs] == ["1", "2"]
    assert docs[0].get("T") == "18 Editions of the Dewey Decimal Classifications"
    assert docs[0].get("W") == "The present study is a history of the DEWEY Decimal Classification."
    assert docs[0].get("X") == "1 5 1 92 1 1"
    # marker lines with trailing spaces, repeated fields, unknown ".X..." lines kept as text
    assert docs[1].get("T") == "Use Made of Technical Libraries"
    assert docs[1].get("A") == "Slater, M.\nOther, A."
    assert docs[1].get("W") == (
        "This report is an analysis of 6300 acts of use "
        ".NET is not a field marker here, .Q neither."
    )
    assert docs[1].get("B") == "1969"
    assert docs[1].get("K") == ""


@pytest.mark.unit
def test_marker_with_inline_content() -> None:
    (doc,) = parse_smart(".I 5\n.T Inline title\n.W\nbody\n")
    assert (doc.id, doc.get("T"), doc.get("W")) == ("5", "Inline title", "body")


@pytest.mark.unit
def test_parse_rel_is_binary() -> None:
    assert parse_rel(REL) == {"1": {"2": 1, "1": 1}, "2": {"2": 1, "99": 1}, "3": {"1": 1}}


@pytest.mark.integration  # writes files
def test_convert_to_beir(tmp_path: Path) -> None:
    for name, text in {"X.ALL": ALL, "X.QRY": QRY, "X.REL": REL}.items():
        (tmp_path / name).write_text(text)
    out = tmp_path / "beir"
    stats = convert_smart(tmp_path / "X.ALL", tmp_path / "X.QRY", tmp_path / "X.REL", out)
    # query numbering follows order of appearance (.I 7 is query 2); query 3 ("Only a title")
    # has a judgment; doc 99 does not exist and is dropped
    assert (stats.documents, stats.queries, stats.judged_queries, stats.judgments) == (2, 3, 3, 4)

    rows = [json.loads(line) for line in (out / "corpus.jsonl").read_text().splitlines()]
    assert rows[0] == {
        "_id": "1",
        "title": "18 Editions of the Dewey Decimal Classifications",
        "text": "The present study is a history of the DEWEY Decimal Classification.",
    }
    queries = [json.loads(line) for line in (out / "queries.jsonl").read_text().splitlines()]
    assert queries == [
        {"_id": "1", "text": queries[0]["text"]},
        {"_id": "2", "text": "Its abstract is the text."},
        {"_id": "3", "text": "Only a title"},
    ]
    assert (out / "qrels.tsv").read_text().splitlines() == [
        "query-id\tcorpus-id\tscore",
        "1\t1\t1",
        "1\t2\t1",
        "2\t2\t1",
        "3\t1\t1",
    ]

    ds = load_beir(out)
    assert [d.id for d in ds.corpus] == ["1", "2"]
    assert ds.corpus[1].full_text.startswith("Use Made of Technical Libraries. This report")
    assert ds.queries["2"] == "Its abstract is the text."
    assert ds.qrels == {"1": {"1": 1, "2": 1}, "2": {"2": 1}, "3": {"1": 1}}
