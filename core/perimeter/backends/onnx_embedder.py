"""Embeddings from an exported ONNX graph, run by ONNX Runtime or OpenVINO on CPU.

The graph (``onnx_export.py``) computes what the torch backend computes: the folder's pooling,
L2 normalisation and, for BGE-M3, the sparse head's token weights. This class does what is left:
tokenising (the model folder's own tokenizer, same truncation), sorting by length so a batch holds
texts of similar length, and BGE-M3's per-token-id max (FlagEmbedding's semantics, as in
``bge_m3.py``). Nothing here imports torch unless an export has to be made.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from perimeter.backends.bge_m3 import unused_token_ids
from perimeter.backends.model_paths import force_offline, resolve_model_path
from perimeter.backends.onnx_export import Kind, OnnxExport, ensure_export
from perimeter.domain import EncodedText, SparseVector

Runtime = Literal["onnx", "openvino"]
Precision = Literal["f32", "bf16"]


class OnnxEmbedder:
    """Same ``Embedder`` protocol as the torch embedders; loads (and exports, the first time) on
    first use or ``warm_up``, once per process."""

    def __init__(
        self,
        model: str,
        cache_dir: Path,
        *,
        kind: Kind = "sentence-transformers",
        runtime: Runtime = "onnx",
        quantize: bool = False,
        threads: int = 0,
        precision: Precision = "f32",
        batch_size: int = 32,
        max_seq_length: int | None = None,
        query_prefix: str = "",
        document_prefix: str = "",
    ) -> None:
        self._spec = model
        self._cache_dir = cache_dir
        self._kind: Kind = kind
        self._runtime: Runtime = runtime
        self._quantize = quantize
        self._threads = threads
        self._precision: Precision = precision
        self._batch_size = max(1, batch_size)
        self._max_seq_length = max_seq_length
        self._query_prefix = query_prefix
        self._document_prefix = document_prefix
        self._loaded: _Loaded | None = None
        self._lock = threading.Lock()

    # -- loading ---------------------------------------------------------------------------
    @property
    def _state(self) -> _Loaded:
        if self._loaded is None:
            with self._lock:
                if self._loaded is None:
                    self._loaded = self._load()
        return self._loaded

    def _load(self) -> _Loaded:
        force_offline()
        from transformers import AutoTokenizer

        export = ensure_export(
            self._cache_dir,
            self._spec,
            self._kind,
            quantize=self._quantize,
            max_seq_length=self._max_seq_length,
        )
        folder = resolve_model_path(self._spec)
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        # Counting (chunker, no truncation) gets its own copy: a fast tokenizer keeps padding
        # and truncation as state that each call resets (see sentence_transformer_embedder.py).
        count_tokenizer = copy.deepcopy(tokenizer)
        run = (
            _openvino_runner(export, self._threads, self._precision)
            if self._runtime == "openvino"
            else None
        )
        run = run or _onnxruntime_runner(export, self._threads)
        skip = np.array(unused_token_ids(tokenizer))
        return _Loaded(export, tokenizer, count_tokenizer, skip, run)

    def warm_up(self) -> None:
        self.encode_queries(["warm up"])

    @property
    def is_loaded(self) -> bool:
        return self._loaded is not None

    @property
    def export(self) -> OnnxExport:
        return self._state.export

    # -- Embedder protocol -----------------------------------------------------------------
    @property
    def dimension(self) -> int:
        return self._state.export.dimension

    @property
    def has_sparse(self) -> bool:
        return self._kind == "bge-m3"

    @property
    def max_seq_length(self) -> int:
        return self._state.export.max_seq_length

    def count_tokens(self, text: str) -> int:
        ids = self._state.count_tokenizer(text, add_special_tokens=False, truncation=False)
        return len(ids["input_ids"])

    def encode_documents(self, texts: Sequence[str]) -> list[EncodedText]:
        return self._encode([self._document_prefix + t for t in texts])

    def encode_queries(self, texts: Sequence[str]) -> list[EncodedText]:
        return self._encode([self._query_prefix + t for t in texts])

    def _encode(self, texts: list[str]) -> list[EncodedText]:
        if not texts:
            return []
        state = self._state
        # Longest first, like sentence-transformers: little compute is spent on padding.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        results: dict[int, EncodedText] = {}
        for start in range(0, len(order), self._batch_size):
            batch_idx = order[start : start + self._batch_size]
            with self._lock:  # the tokenizer's padding/truncation state is per call
                features = state.tokenizer(
                    [texts[i] for i in batch_idx],
                    padding=True,
                    truncation=True,
                    max_length=state.export.max_seq_length,
                    return_tensors="np",
                )
            input_ids = features["input_ids"].astype(np.int64)
            mask = features["attention_mask"].astype(np.int64)
            outputs = state.run(input_ids, mask)
            dense = outputs[0]
            weights = outputs[1] if len(outputs) > 1 else None
            for row, i in enumerate(batch_idx):
                sparse = (
                    _max_per_id(input_ids[row], weights[row], mask[row], state.skip_ids)
                    if weights is not None
                    else None
                )
                results[i] = EncodedText(dense=dense[row].tolist(), sparse=sparse)
        return [results[i] for i in range(len(texts))]


class _Loaded:
    __slots__ = ("count_tokenizer", "export", "run", "skip_ids", "tokenizer")

    def __init__(
        self, export: OnnxExport, tokenizer: Any, count_tokenizer: Any, skip_ids: Any, run: Any
    ) -> None:
        self.export = export
        self.tokenizer = tokenizer
        self.count_tokenizer = count_tokenizer
        self.skip_ids = skip_ids
        self.run = run


def _max_per_id(ids: Any, weights: Any, mask: Any, skip_ids: Any) -> SparseVector:
    """BGE-M3's lexical weights: one entry per token id, its largest weight; special tokens,
    padding and weights <= 0 dropped; indices ascending."""
    keep = (mask > 0) & (weights > 0) & ~np.isin(ids, skip_ids)
    kept_ids, kept_w = ids[keep], weights[keep]
    if kept_ids.size == 0:
        return SparseVector(indices=[], values=[])
    unique, inverse = np.unique(kept_ids, return_inverse=True)
    best = np.full(unique.shape[0], -np.inf, dtype=np.float32)
    np.maximum.at(best, inverse, kept_w.astype(np.float32))
    return SparseVector(indices=unique.tolist(), values=best.tolist())


def _onnxruntime_runner(export: OnnxExport, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(
        str(export.graph), sess_options=options, providers=["CPUExecutionProvider"]
    )

    def run(input_ids: Any, mask: Any) -> list[Any]:
        # InferenceSession.run is thread-safe: concurrent worker threads share one session.
        return list(session.run(None, {"input_ids": input_ids, "attention_mask": mask}))

    return run


def _openvino_runner(export: OnnxExport, threads: int, precision: Precision) -> Any:
    try:
        import openvino as ov
    except ImportError as exc:
        raise RuntimeError(
            "PERIMETER_EMBEDDING__BACKEND=openvino needs the openvino package "
            "(pip install 'perimeter[openvino]')"
        ) from exc
    core = ov.Core()
    # Precision is always said: left unset, OpenVINO computes in bfloat16 on CPUs that have
    # AVX-512 BF16 or AMX and in float32 elsewhere, so the same graph would give other vectors
    # (max |diff| 8e-4 on MiniLM) depending on the machine a worker lands on.
    config: dict[str, Any] = {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": precision,
    }
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = core.compile_model(str(export.graph), "CPU", config)
    outputs = list(compiled.outputs)

    def run(input_ids: Any, mask: Any) -> list[Any]:
        # One infer request per call: a compiled model is shared, requests are not.
        request = compiled.create_infer_request()
        result = request.infer({"input_ids": input_ids, "attention_mask": mask})
        return [np.asarray(result[o]) for o in outputs]

    return run
