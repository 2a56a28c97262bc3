"""The evaluation harness on the real CISI collection (shared/data/cisi), baselines on a slice."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from perimeter.eval import (
    CorpusDoc,
    EvalReport,
    SearchSystem,
    convert_smart,
    load_beir,
    run_retrieval_eval,
    slice_dataset,
)
from perimeter.eval.baselines import rrf_fuse
from perimeter.eval.beir import BeirDataset

pytestmark = pytest.mark.integration

CISI = Path(__file__).resolve().parents[2] / "shared" / "data" / "cisi"
if not CISI.is_dir():  # a worktree without shared/ beside the code: the one the project ships
    CISI = Path("/work/shared/data/cisi")


@pytest.fixture(scope="module")
def cisi(tmp_path_factory: pytest.TempPathFactory) -> BeirDataset:
    if not (CISI / "CISI.ALL").is_file():
        pytest.skip(f"CISI collection not found at {CISI}")
    out = tmp_path_factory.mktemp("cisi")
    stats = convert_smart(CISI / "CISI.ALL", CISI / "CISI.QRY", CISI / "CISI.REL", out)
    assert (stats.documents, stats.queries, stats.judged_queries) == (1460, 112, 76)
    return load_beir(out)


def test_conversion_counts(cisi: BeirDataset) -> None:
    assert len(cisi.corpus) == 1460
    assert len({d.id for d in cisi.corpus}) == 1460
    assert len(cisi.queries) == 112
    assert len(cisi.qrels) == 76
    assert sum(len(r) for r in cisi.qrels.values()) == 3114
    assert all(d.text for d in cisi.corpus)
    assert all(q.strip() for q in cisi.queries.values())
    doc_ids = {d.id for d in cisi.corpus}
    assert all(set(r) <= doc_ids for r in cisi.qrels.values())


def test_slice_keeps_judged_documents(cisi: BeirDataset) -> None:
    s = slice_dataset(cisi.corpus, cisi.queries, cisi.qrels, max_queries=20, max_docs=650)
    assert len(s.queries) == 20
    assert set(s.queries) == set(s.qrels)
    doc_ids = {d.id for d in s.corpus}
    assert len(doc_ids) == 650
    needed = {d for r in s.qrels.values() for d in r}
    assert needed <= doc_ids
    # a cap below the judged documents still keeps all of them
    tiny = slice_dataset(cisi.corpus, cisi.queries, cisi.qrels, max_queries=20, max_docs=10)
    assert {d.id for d in tiny.corpus} == needed


def test_rrf_fuse() -> None:
    a = {"q": {"d1": 9.0, "d2": 5.0, "d3": 1.0}}
    b = {"q": {"d3": 0.9, "d1": 0.8}}
    fused = rrf_fuse([a, b], top_k=2)
    assert list(fused["q"]) == ["d1", "d3"]
    assert fused["q"]["d1"] == pytest.approx(1 / 61 + 1 / 62)
    assert fused["q"]["d3"] == pytest.approx(1 / 63 + 1 / 61)


class _OracleSystem:
    """Returns the judged documents first in 'dense' mode, nothing in 'sparse' mode,
    and a duplicate-laden list in 'hybrid' mode: checks the harness plumbing."""

    name = "oracle"

    def __init__(self, qrels: dict[str, dict[str, int]], queries: dict[str, str]) -> None:
        self._by_text = {queries[q]: sorted(r) for q, r in qrels.items()}
        self.indexed: list[str] = []

    def index(self, docs: Sequence[CorpusDoc]) -> None:
        self.indexed = [d.id for d in docs]

    def search(self, query: str, mode: str, k: int) -> list[tuple[str, float]]:
        relevant = self._by_text[query]
        if mode == "dense":
            return [(d, 1.0) for d in relevant][:k]  # equal scores: order must still count
        if mode == "sparse":
            return []
        others = [d for d in self.indexed if d not in relevant]
        return [(others[0], 5.0), (others[0], 5.0), *[(d, 1.0) for d in relevant]][:k]


def test_baselines_and_system_on_a_slice(cisi: BeirDataset) -> None:
    sliced = slice_dataset(cisi.corpus, cisi.queries, cisi.qrels, max_queries=20, max_docs=650)
    system = _OracleSystem(sliced.qrels, sliced.queries)
    assert isinstance(system, SearchSystem)
    report = run_retrieval_eval(
        cisi.corpus,
        cisi.queries,
        cisi.qrels,
        system=system,
        max_queries=20,
        max_docs=650,
        dataset="CISI",
    )
    assert isinstance(report, EvalReport)
    assert (report.documents, report.queries) == (650, 20)
    assert len(system.indexed) == 650
    assert [(r.system, r.mode) for r in report.rows] == [
        ("baseline", "bm25+stem"),
        ("baseline", "minilm-exact"),
        ("baseline", "rrf(bm25,dense)"),
        ("oracle", "dense"),
        ("oracle", "sparse"),
        ("oracle", "hybrid"),
    ]
    for row in report.rows:
        assert set(row.metrics) == {"ndcg@10", "recall@10", "recall@100", "mrr@10"}
        assert all(0.0 <= v <= 1.0 for v in row.metrics.values()), row
    assert report.row("baseline", "bm25+stem").metrics["ndcg@10"] > 0.1
    assert report.row("baseline", "minilm-exact").metrics["ndcg@10"] > 0.1
    assert report.row("oracle", "dense").metrics["ndcg@10"] == pytest.approx(1.0)
    assert report.row("oracle", "dense").metrics["mrr@10"] == pytest.approx(1.0)
    assert report.row("oracle", "sparse").metrics == {
        "ndcg@10": 0.0,
        "recall@10": 0.0,
        "recall@100": 0.0,
        "mrr@10": 0.0,
    }
    # one non-relevant document first (its duplicate dropped), then all the relevant ones
    assert report.row("oracle", "hybrid").metrics["mrr@10"] == pytest.approx(0.5)

    table = report.to_table()
    assert "| system / mode | nDCG@10 | R@10 | R@100 | MRR@10 |" in table
    assert "| oracle / dense | 1.000 | " in table
    assert json.loads(report.to_json())["rows"][0]["mode"] == "bm25+stem"


def test_rejects_unknown_mode(cisi: BeirDataset) -> None:
    with pytest.raises(ValueError, match="unknown search mode"):
        run_retrieval_eval(cisi.corpus, cisi.queries, cisi.qrels, modes=("colbert",))
