"""Dense embeddings through sentence-transformers, from a local folder or packaged model."""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from perimeter.backends.model_paths import force_offline, resolve_model_path
from perimeter.domain import EncodedText

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


class SentenceTransformerEmbedder:
    """Loads the model on first use (or ``warm_up``), once per process; thread-safe load."""

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
        self._device = device
        self._threads = threads
        self._batch_size = batch_size
        self._max_seq_length = max_seq_length
        self._query_prefix = query_prefix
        self._document_prefix = document_prefix
        self._model: SentenceTransformer | None = None
        self._count_tokenizer: Any = None
        self._lock = threading.Lock()

    # -- loading ---------------------------------------------------------------------------
    @property
    def model(self) -> SentenceTransformer:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = self._load()
        return self._model

    def _load(self) -> SentenceTransformer:
        force_offline()
        from sentence_transformers import SentenceTransformer

        if self._threads:
            import torch

            torch.set_num_threads(self._threads)  # process-wide: torch has one intra-op pool
        path = resolve_model_path(self._spec)
        model = SentenceTransformer(str(path), device=self._device, local_files_only=True)
        if self._max_seq_length:
            model.max_seq_length = self._max_seq_length
        model.eval()
        return model

    def warm_up(self) -> None:
        self.encode_queries(["warm up"])

    @property
    def is_loaded(self) -> bool:
        return self._model is not None

    # -- Embedder protocol -----------------------------------------------------------------
    @property
    def dimension(self) -> int:
        dim = self.model.get_embedding_dimension()
        if dim is None:
            raise RuntimeError(f"cannot tell the embedding dimension of {self._spec}")
        return int(dim)

    @property
    def has_sparse(self) -> bool:
        return False

    @property
    def max_seq_length(self) -> int:
        return int(self.model.max_seq_length or 512)

    def count_tokens(self, text: str) -> int:
        tokenizer = self._count_tokenizer or self._make_count_tokenizer()
        return len(tokenizer(text, add_special_tokens=False, truncation=False)["input_ids"])

    def _make_count_tokenizer(self) -> Any:
        """A tokenizer of its own for counting. A Hugging Face fast tokenizer keeps its
        truncation and padding settings as state that every call resets: chunking (no
        truncation) and encode (padding, truncation) sharing one, from several worker threads,
        made encode fail ("Unable to create tensor ... padding=True") or counts come out
        wrong. The copy is switched to counting settings once, before any thread sees it."""
        model = self.model  # outside the lock: loading the model takes it too
        with self._lock:
            if self._count_tokenizer is None:
                tokenizer = copy.deepcopy(model.tokenizer)
                tokenizer("warm up", add_special_tokens=False, truncation=False)
                self._count_tokenizer = tokenizer
        return self._count_tokenizer

    def encode_documents(self, texts: Sequence[str]) -> list[EncodedText]:
        return self._encode([self._document_prefix + t for t in texts])

    def encode_queries(self, texts: Sequence[str]) -> list[EncodedText]:
        return self._encode([self._query_prefix + t for t in texts])

    def _encode(self, texts: list[str]) -> list[EncodedText]:
        if not texts:
            return []
        vectors = self.model.encode(
            texts,
            batch_size=self._batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return [EncodedText(dense=v.tolist()) for v in vectors]
