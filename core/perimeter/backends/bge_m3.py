"""BGE-M3: dense and learned sparse (and optionally ColBERT) vectors from one forward pass.

Semantics follow the reference implementation, FlagEmbedding's ``BGEM3FlagModel``
(FlagOpen/FlagEmbedding, ``FlagEmbedding/inference/embedder/encoder_only/m3.py`` and
``FlagEmbedding/finetune/embedder/encoder_only/m3/modeling.py`` / ``runner.py``):

* dense: ``last_hidden_state[:, 0]`` ([CLS] pooling), L2-normalised (``_dense_embedding``);
* sparse: ``token_weights = relu(sparse_linear(last_hidden_state))`` with ``sparse_linear`` a
  ``Linear(hidden, 1)`` loaded from ``sparse_linear.pt`` (``_sparse_embedding``); then per text
  (``_process_token_weights``) a token id keeps the MAX weight over its occurrences, ids of the
  tokenizer's ``cls_token``, ``eos_token``, ``pad_token`` and ``unk_token`` are skipped (only those
  four: a BERT-vocabulary model would keep ``[SEP]``, for XLM-R ``</s>`` is the eos token), and
  weights ``<= 0`` are skipped;
* ColBERT: ``colbert_linear(last_hidden_state[:, 1:])`` times the attention mask, L2-normalised,
  then the first ``n_tokens - 1`` rows kept (every real token but [CLS], the final ``</s>``
  included) (``_colbert_embedding`` / ``_process_colbert_vecs``); ``colbert_linear`` is a
  ``Linear(hidden, dim)`` from ``colbert_linear.pt``.

The transformer itself is run through sentence-transformers (the bge-m3 folder ships a
``modules.json`` with CLS pooling and a Normalize module), so loading, device placement and
truncation are the same as for every other embedder here.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from perimeter.backends.model_paths import ModelNotFound, resolve_model_path
from perimeter.backends.sentence_transformer_embedder import SentenceTransformerEmbedder
from perimeter.domain import EncodedText, SparseVector

if TYPE_CHECKING:
    import torch
    from sentence_transformers import SentenceTransformer

SPARSE_HEAD_FILE = "sparse_linear.pt"
COLBERT_HEAD_FILE = "colbert_linear.pt"


class BgeM3Embedder:
    """Dense + learned sparse vectors; loads on first use (or ``warm_up``), thread-safe load.

    Composition over the plain sentence-transformers embedder: it owns model loading and the
    token helpers; this class adds the heads and the single-pass encode.
    """

    def __init__(
        self,
        model: str,
        device: str = "cpu",
        batch_size: int = 32,
        max_seq_length: int | None = None,
        query_prefix: str = "",
        document_prefix: str = "",
        threads: int = 0,
    ) -> None:
        self._spec = model
        self._batch_size = max(1, batch_size)
        self._query_prefix = query_prefix
        self._document_prefix = document_prefix
        self._st = SentenceTransformerEmbedder(
            model,
            device=device,
            batch_size=batch_size,
            max_seq_length=max_seq_length,
            threads=threads,
        )
        self._heads: _Heads | None = None
        self._lock = threading.Lock()

    # -- loading ---------------------------------------------------------------------------
    @property
    def model(self) -> SentenceTransformer:
        return self._st.model

    @property
    def _loaded_heads(self) -> _Heads:
        if self._heads is None:
            with self._lock:
                if self._heads is None:
                    self._heads = self._load_heads()
        return self._heads

    def _load_heads(self) -> _Heads:
        import torch

        model = self.model
        folder = resolve_model_path(self._spec)
        sparse_path = folder / SPARSE_HEAD_FILE
        if not sparse_path.is_file():
            raise ModelNotFound(
                f"{sparse_path} is missing: a BGE-M3 folder ships its sparse head there "
                "(set PERIMETER_EMBEDDING__KIND=sentence-transformers for a dense-only model)"
            )
        transformer: Any = model[0]  # the Transformer module; its HF model holds the config
        hidden = int(transformer.auto_model.config.hidden_size)
        param = next(model.parameters())
        sparse = load_linear(sparse_path, hidden, param.device, param.dtype)
        if sparse.out_features != 1:
            raise ValueError(f"{sparse_path}: expected Linear({hidden}, 1), got {sparse}")
        colbert_path = folder / COLBERT_HEAD_FILE
        colbert = (
            load_linear(colbert_path, hidden, param.device, param.dtype)
            if colbert_path.is_file()
            else None
        )
        return _Heads(
            sparse=sparse,
            colbert=colbert,
            skip_ids=torch.tensor(
                unused_token_ids(model.tokenizer), dtype=torch.long, device=param.device
            ),
        )

    def warm_up(self) -> None:
        self.encode_queries(["warm up"])

    @property
    def is_loaded(self) -> bool:
        return self._heads is not None

    # -- Embedder protocol -----------------------------------------------------------------
    @property
    def dimension(self) -> int:
        return self._st.dimension

    @property
    def has_sparse(self) -> bool:
        return True

    @property
    def has_colbert(self) -> bool:
        return self._loaded_heads.colbert is not None

    @property
    def max_seq_length(self) -> int:
        return self._st.max_seq_length

    def count_tokens(self, text: str) -> int:
        return self._st.count_tokens(text)

    def encode_documents(self, texts: Sequence[str]) -> list[EncodedText]:
        return self._encode([self._document_prefix + t for t in texts])

    def encode_queries(self, texts: Sequence[str]) -> list[EncodedText]:
        return self._encode([self._query_prefix + t for t in texts])

    def encode_colbert(self, texts: Sequence[str]) -> list[list[list[float]]]:
        """Multi-vector (ColBERT) token vectors per text; needs ``colbert_linear.pt``."""
        if not self.has_colbert:
            raise ModelNotFound(f"{self._spec} has no {COLBERT_HEAD_FILE}: no ColBERT vectors")
        return [vecs for _, _, vecs in self._forward(list(texts), colbert=True)]

    # -- the single forward pass -----------------------------------------------------------
    def _encode(self, texts: list[str]) -> list[EncodedText]:
        return [
            EncodedText(dense=dense, sparse=sparse)
            for dense, sparse, _ in self._forward(texts, colbert=False)
        ]

    def _forward(
        self, texts: list[str], colbert: bool
    ) -> list[tuple[list[float], SparseVector, list[list[float]]]]:
        import torch
        import torch.nn.functional as F

        if not texts:
            return []
        model = self.model
        heads = self._loaded_heads
        # Longest first, as FlagEmbedding and sentence-transformers do: texts of similar length
        # share a batch, so little compute is spent on padding. Results are put back in order.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        results: dict[int, tuple[list[float], SparseVector, list[list[float]]]] = {}
        device = next(model.parameters()).device
        for start in range(0, len(order), self._batch_size):
            batch_idx = order[start : start + self._batch_size]
            features = _preprocess(model, [texts[i] for i in batch_idx])
            features = {
                k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in features.items()
            }
            with torch.inference_mode():
                out = model.forward(features)
                hidden: torch.Tensor = out["token_embeddings"]
                input_ids: torch.Tensor = features["input_ids"]
                mask: torch.Tensor = features["attention_mask"]
                # The folder's pooling is CLS; normalising again is a no-op when it also has a
                # Normalize module and makes the vector unit length when it does not.
                dense = F.normalize(out["sentence_embedding"].float(), dim=-1).cpu()
                weights = torch.relu(heads.sparse(hidden)).squeeze(-1).float()
                # Padding positions hold pad_token_id and would be skipped anyway; the mask makes
                # that independent of the tokenizer's choice of pad token.
                keep = (mask > 0) & (weights > 0) & ~torch.isin(input_ids, heads.skip_ids)
                colbert_vecs: torch.Tensor | None = None
                if colbert and heads.colbert is not None:
                    col = heads.colbert(hidden[:, 1:]) * mask[:, 1:, None].to(hidden.dtype)
                    colbert_vecs = F.normalize(col.float(), dim=-1).cpu()
                n_tokens = mask.sum(dim=1).tolist()
                for row, i in enumerate(batch_idx):
                    sparse = _max_per_id(input_ids[row][keep[row]], weights[row][keep[row]])
                    vecs = (
                        colbert_vecs[row, : int(n_tokens[row]) - 1].tolist()
                        if colbert_vecs is not None
                        else []
                    )
                    results[i] = (dense[row].tolist(), sparse, vecs)
        return [results[i] for i in range(len(texts))]


class _Heads:
    """The small linear heads that sit on top of the transformer's last hidden state."""

    __slots__ = ("colbert", "skip_ids", "sparse")

    def __init__(
        self, sparse: torch.nn.Linear, colbert: torch.nn.Linear | None, skip_ids: torch.Tensor
    ) -> None:
        self.sparse = sparse
        self.colbert = colbert
        self.skip_ids = skip_ids


def load_linear(path: Path, hidden: int, device: Any, dtype: Any) -> torch.nn.Linear:
    import torch

    # weights_only: a .pt file is a pickle; never execute code from a model folder.
    state = torch.load(path, map_location="cpu", weights_only=True)
    weight = state["weight"]
    if weight.ndim != 2 or weight.shape[1] != hidden:
        raise ValueError(f"{path}: weight {tuple(weight.shape)} does not fit hidden size {hidden}")
    linear = torch.nn.Linear(hidden, int(weight.shape[0]))
    linear.load_state_dict(state)
    return linear.to(device=device, dtype=dtype).eval()


def _preprocess(model: SentenceTransformer, texts: list[str]) -> dict[str, Any]:
    # sentence-transformers 6 renamed tokenize() to preprocess(); both pad and truncate to the
    # model's max_seq_length.
    fn = getattr(model, "preprocess", None) or model.tokenize
    return dict(fn(texts))


def _max_per_id(ids: torch.Tensor, weights: torch.Tensor) -> SparseVector:
    """One entry per token id holding its largest weight; indices ascending."""
    import torch

    if ids.numel() == 0:
        return SparseVector(indices=[], values=[])
    unique, inverse = torch.unique(ids, return_inverse=True)
    best = torch.zeros(unique.shape[0], dtype=weights.dtype, device=weights.device)
    best = best.scatter_reduce(0, inverse, weights, reduce="amax", include_self=False)
    return SparseVector(indices=unique.tolist(), values=best.cpu().tolist())


def unused_token_ids(tokenizer: Any) -> list[int]:
    """Token ids that never get a sparse weight: exactly FlagEmbedding's ``unused_tokens``, the
    cls, eos, pad and unk tokens (whichever the tokenizer has), ascending. The ONNX backend
    (``onnx_embedder.py``) drops the same ones."""
    return sorted(
        {
            token_id
            for name in ("cls", "eos", "pad", "unk")
            if (token_id := getattr(tokenizer, f"{name}_token_id", None)) is not None
        }
    )
