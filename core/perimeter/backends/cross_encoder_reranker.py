"""Optional second-stage reranking with a cross-encoder from a local model folder.

Hybrid retrieval scores the question and a chunk separately; a cross-encoder reads them together,
which is slower (one forward pass per candidate) and usually more precise. So it only reorders the
fused top-N candidates, and only when an operator stages a model and sets
``PERIMETER_RETRIEVAL__RERANKER_MODEL``.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from perimeter.backends.model_paths import force_offline, resolve_model_path
from perimeter.domain import ScoredChunk

if TYPE_CHECKING:
    from sentence_transformers import CrossEncoder


class CrossEncoderReranker:
    def __init__(self, model: str, device: str = "cpu", batch_size: int = 16) -> None:
        self._spec = model
        self._device = device
        self._batch_size = batch_size
        self._model: CrossEncoder | None = None
        self._lock = threading.Lock()

    @property
    def model(self) -> CrossEncoder:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    force_offline()
                    from sentence_transformers import CrossEncoder

                    path = resolve_model_path(self._spec)
                    self._model = CrossEncoder(str(path), device=self._device)
        return self._model

    def warm_up(self) -> None:
        self.model.predict([("warm", "up")])

    def rerank(self, question: str, chunks: Sequence[ScoredChunk], top_k: int) -> list[ScoredChunk]:
        if not chunks:
            return []
        scores = self.model.predict(
            [(question, c.text) for c in chunks],
            batch_size=self._batch_size,
            show_progress_bar=False,
        )
        ranked = sorted(zip(chunks, scores, strict=True), key=lambda cs: float(cs[1]), reverse=True)
        # The fused score is replaced by the cross-encoder's; dense_score (used for abstention)
        # is kept, since it is the one calibrated against min_dense_score.
        return [dataclasses.replace(c, score=float(s)) for c, s in ranked[:top_k]]
