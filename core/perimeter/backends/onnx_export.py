"""Export an embedding model to one ONNX graph that ONNX Runtime or OpenVINO runs on CPU.

Why our own exporter: sentence-transformers' ``backend="onnx"`` goes through ``optimum-onnx``,
whose releases pin transformers below the version sentence-transformers 6.2 needs. The graph
here is built with ``torch.onnx.export`` straight from the loaded ``SentenceTransformer``, so the
exported computation is exactly the one the torch backend runs:

* inputs ``input_ids``, ``attention_mask`` (int64, batch x tokens, both axes dynamic);
* output ``dense``: the folder's own pooling (``modules.json``), then L2-normalised;
* output ``token_weights`` (BGE-M3 only): ``relu(sparse_linear(last_hidden_state))``, the learned
  sparse weights before the per-id max, which the embedder does in numpy (see ``bge_m3.py``).

An export lives in a folder keyed by a fingerprint of the source folder (file names and sizes,
plus the full text of its JSON configs), so replacing the weights triggers a new export and two
models never share one. Export writes to a temporary folder and renames it into place, so a crash
or two processes exporting at once never leave a half-written graph behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from perimeter.backends.model_paths import PACKAGE_PREFIX, force_offline, resolve_model_path

log = logging.getLogger(__name__)

GRAPH_FILE = "model.onnx"
GRAPH_INT8_FILE = "model.int8.onnx"
META_FILE = "perimeter-onnx.json"
# Bumped when the graph's inputs/outputs change, so old exports are not reused.
EXPORT_FORMAT = 1
OPSET = 17

Kind = Literal["sentence-transformers", "bge-m3"]


@dataclass(frozen=True)
class OnnxExport:
    folder: Path
    graph: Path
    kind: Kind
    dimension: int
    max_seq_length: int
    quantized: bool

    @property
    def has_sparse(self) -> bool:
        return self.kind == "bge-m3"


def source_fingerprint(model_dir: Path) -> str:
    """Changes when the model folder's files change; cheap (no hashing of multi-GB weights)."""
    h = hashlib.sha256(f"format={EXPORT_FORMAT}".encode())
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(model_dir).as_posix()
        if rel.startswith(".") or "/." in rel:
            continue
        h.update(f"{rel}\0{path.stat().st_size}\0".encode())
        if path.suffix == ".json" and path.stat().st_size < 1_000_000:
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def export_folder(cache_dir: Path, model_spec: str, kind: Kind, max_seq_length: int | None) -> Path:
    source = resolve_model_path(model_spec)
    name = (
        model_spec.removeprefix(PACKAGE_PREFIX)
        if model_spec.startswith(PACKAGE_PREFIX)
        else source.name
    )
    slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in name)[:48]
    seq = f"-s{max_seq_length}" if max_seq_length else ""
    return cache_dir / f"{slug}-{kind}{seq}-{source_fingerprint(source)}"


def ensure_export(
    cache_dir: Path,
    model_spec: str,
    kind: Kind,
    *,
    quantize: bool = False,
    max_seq_length: int | None = None,
) -> OnnxExport:
    """The export of ``model_spec`` under ``cache_dir``, made first if it is not there yet."""
    folder = export_folder(cache_dir, model_spec, kind, max_seq_length)
    if not (folder / META_FILE).is_file():
        _export(folder, model_spec, kind, max_seq_length)
    meta = json.loads((folder / META_FILE).read_text())
    graph = folder / GRAPH_FILE
    if quantize:
        graph = folder / GRAPH_INT8_FILE
        if not graph.is_file():
            _quantize(folder)
    return OnnxExport(
        folder=folder,
        graph=graph,
        kind=kind,
        dimension=int(meta["dimension"]),
        max_seq_length=int(meta["max_seq_length"]),
        quantized=quantize,
    )


def _export(folder: Path, model_spec: str, kind: Kind, max_seq_length: int | None) -> None:
    force_offline()
    import torch

    from perimeter.backends.bge_m3 import SPARSE_HEAD_FILE, load_linear
    from perimeter.backends.sentence_transformer_embedder import SentenceTransformerEmbedder

    log.info("exporting %s to ONNX under %s (once per model)", model_spec, folder)
    st = SentenceTransformerEmbedder(model_spec, device="cpu", max_seq_length=max_seq_length)
    model = st.model.float()
    transformer: Any = model[0]  # the Transformer module; its HF model holds the config
    hidden = int(transformer.auto_model.config.hidden_size)
    sparse = None
    if kind == "bge-m3":
        sparse = load_linear(
            resolve_model_path(model_spec) / SPARSE_HEAD_FILE, hidden, "cpu", torch.float32
        )
    graph = _Graph(model, sparse).eval()
    outputs = ["dense", "token_weights"] if sparse is not None else ["dense"]
    sample = _preprocess(model, ["an example sentence to trace", "and a second one"])
    args = (sample["input_ids"].long(), sample["attention_mask"].long())
    axes: dict[str, dict[int, str]] = {
        "input_ids": {0: "batch", 1: "tokens"},
        "attention_mask": {0: "batch", 1: "tokens"},
        "dense": {0: "batch"},
    }
    if sparse is not None:
        axes["token_weights"] = {0: "batch", 1: "tokens"}
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        with torch.inference_mode(), warnings.catch_warnings():
            # The tracer warns about Python booleans it freezes: sdpa's ``is_causal`` (False for
            # an encoder given a mask) and pooling's "mask as long as the tokens" (always true
            # here), and about advanced indexing with negative indices (pooling uses none).
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message="Exporting aten::index operator")
            torch.onnx.export(
                graph,
                args,
                str(tmp / GRAPH_FILE),
                input_names=["input_ids", "attention_mask"],
                output_names=outputs,
                dynamic_axes=axes,
                opset_version=OPSET,
                dynamo=False,
            )
        consolidate_external_data(tmp / GRAPH_FILE)
        meta = {
            "format": EXPORT_FORMAT,
            "source": str(resolve_model_path(model_spec)),
            "kind": kind,
            "dimension": st.dimension,
            "max_seq_length": st.max_seq_length,
            "torch": torch.__version__,
            "opset": OPSET,
        }
        # Written last: its presence is what marks an export complete.
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
        try:
            os.rename(tmp, folder)
        except OSError:
            # Another process finished the same export first; theirs is as good as ours.
            if not (folder / META_FILE).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def consolidate_external_data(graph: Path) -> None:
    """One ``model.onnx.data`` file instead of one file per tensor.

    A graph over protobuf's 2 GB limit (BGE-M3: 2.2 GB of float32) is written by the exporter
    with every weight in a file of its own, hundreds of them next to ``model.onnx``. One data file
    is what an operator can checksum, copy and mount; nothing changes for the runtimes."""
    import onnx

    folder = graph.parent
    loose = [p for p in folder.iterdir() if p.is_file() and p != graph]
    if not loose:
        return
    model = onnx.load(str(graph))  # reads the external tensors into memory
    for path in loose:
        path.unlink()
    onnx.save_model(
        model,
        str(graph),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=graph.name + ".data",
        size_threshold=1024,
    )


def _quantize(folder: Path) -> None:
    """Dynamic int8 quantisation of the weights (activations stay float): the usual 2-3x on CPU
    for transformer encoders, at a small cost in retrieval quality (see BENCHMARKS.md)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    log.info("quantising %s to int8", folder / GRAPH_FILE)
    fd, tmp_name = tempfile.mkstemp(prefix=".int8.", suffix=".onnx", dir=folder)
    os.close(fd)
    try:
        quantize_dynamic(
            str(folder / GRAPH_FILE),
            tmp_name,
            weight_type=QuantType.QInt8,
            # Per output channel, 7-bit weights: per-tensor 8-bit scales cost MiniLM a mean cosine
            # of 0.948 to the float vectors (measured); this costs 0.985. The 7 bits avoid the
            # u8*s8 saturation of CPUs without VNNI, which is most of the loss there.
            per_channel=True,
            reduce_range=True,
            # Shape inference cannot type every MatMul output of an exported transformer.
            extra_options={"DefaultTensorType": 1},  # onnx.TensorProto.FLOAT
        )
        os.replace(tmp_name, folder / GRAPH_INT8_FILE)
    finally:
        Path(tmp_name).unlink(missing_ok=True)


def _preprocess(model: Any, texts: list[str]) -> dict[str, Any]:
    fn = getattr(model, "preprocess", None) or model.tokenize
    return dict(fn(texts))


def _graph_module() -> type:
    import torch
    import torch.nn.functional as F

    class Graph(torch.nn.Module):
        def __init__(self, model: Any, sparse: torch.nn.Linear | None) -> None:
            super().__init__()
            self.model = model
            self.sparse = sparse

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
            out = self.model({"input_ids": input_ids, "attention_mask": attention_mask})
            dense = F.normalize(out["sentence_embedding"].float(), dim=-1)
            if self.sparse is None:
                return dense
            weights = torch.relu(self.sparse(out["token_embeddings"])).squeeze(-1)
            return dense, weights.float()

    return Graph


def _Graph(model: Any, sparse: Any) -> Any:
    # torch is imported lazily (nothing at import time), so the module class is built on demand.
    return _graph_module()(model, sparse)
