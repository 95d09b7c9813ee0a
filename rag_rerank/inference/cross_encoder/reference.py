"""``CrossEncoder.predict`` itself: the reference every other backend is measured against."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from rag_rerank.inference.cross_encoder.pytorch import ACCELERATOR_BATCH_SIZE, CPU_BATCH_SIZE
from rag_rerank.inference.tokens import Pairs, loaded_dtype

if TYPE_CHECKING:
    from sentence_transformers import CrossEncoder


class ReferenceBackend:
    def __init__(self, model: CrossEncoder, *, batch_size: int | None, compile: bool = False, dtype: str = "float32"):
        self.model = model
        self.batch_size = batch_size or (CPU_BATCH_SIZE if model.device.type == "cpu" else ACCELERATOR_BATCH_SIZE)
        self.dtype = loaded_dtype(model)

    def logits(self, pairs: Pairs) -> np.ndarray:
        import torch

        return np.asarray(
            self.model.predict(
                list(pairs), batch_size=self.batch_size, activation_fn=torch.nn.Identity(), show_progress_bar=False
            )
        )

    def close(self) -> None:
        pass
