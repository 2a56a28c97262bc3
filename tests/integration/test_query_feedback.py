"""RM3 feedback through the real retriever: chunking, BM25 sparse vectors, local Qdrant."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from perimeter.eval.beir import CorpusDoc
from perimeter.eval.pipeline_system import PipelineSearchSystem
from perimeter.settings import Settings

pytestmark = pytest.mark.integration

DOCS = [
    CorpusDoc("a", "", "Compiler optimization: loop unrolling and register allocation."),
    CorpusDoc("b", "", "Loop unrolling with register allocation on vector machines."),
    CorpusDoc("c", "", "Weather reports from coastal stations."),
]


def _sparse_hits(feedback_chunks: int, shared_embedder: Any, tmp_path: Path) -> list[str]:
    settings = Settings()
    settings.retrieval.feedback_chunks = feedback_chunks
    with PipelineSearchSystem(settings, embedder=shared_embedder, workdir=tmp_path) as system:
        system.index(DOCS)
        return [doc_id for doc_id, _ in system.search("compiler", "sparse", 10)]


def test_feedback_finds_what_the_first_hit_is_about(shared_embedder: Any, tmp_path: Path) -> None:
    # "b" shares no term with the question; only the terms of the first hit ("a") lead to it.
    assert _sparse_hits(0, shared_embedder, tmp_path) == ["a"]
    hits = _sparse_hits(1, shared_embedder, tmp_path)
    assert hits[:2] == ["a", "b"]
    assert "c" not in hits
