"""The bi-encoder on OpenVINO: its transformer exported to ONNX and compiled for the CPU
(``openvino_graph``) in float32, bfloat16 or int8; prompts, truncation, pooling and normalisation
as sentence-transformers does them, outside the graph."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rag_rerank.inference.export import exported_encoder
from rag_rerank.inference.openvino_graph import CompiledGraph
from rag_rerank.inference.tokens import padded_batches


class UnsupportedModel(ValueError):
    """The model's layout is not one the OpenVINO path runs (it needs Transformer + mean/CLS pooling)."""


class OpenVinoEncoder:
    """The bi-encoder's transformer in OpenVINO; prompts, truncation, pooling and normalisation as
    sentence-transformers does them, outside the graph."""

    BATCH = 16  # texts sorted by token count; 1.15x over 64 (less padding per batch)

    def __init__(self, model: Any, dtype: str):
        kinds = [type(module).__name__ for module in model]
        pooling = getattr(model[1], "pooling_mode", None) if len(model) > 1 else None
        if kinds[:2] != ["Transformer", "Pooling"] or pooling not in ("mean", "cls") or len(kinds) > 3:
            raise UnsupportedModel(
                f"backend='openvino' runs Transformer + mean or CLS pooling (+ Normalize) bi-encoders; "
                f"this one is {kinds} with {pooling!r} pooling: use backend='torch'"
            )
        self.model, self.pooling = model, pooling
        self.path = exported_encoder(model[0].auto_model)
        self._graph = CompiledGraph(self.path, dtype)
        self.dtype = self._graph.dtype  # what OpenVINO runs

    def embed(self, texts: Sequence[str], kind: str) -> np.ndarray:
        prompt = (self.model.prompts or {}).get(kind) or ""
        tokenizer = self.model.tokenizer
        encoded = tokenizer([prompt + text for text in texts], truncation=True, max_length=self.model.max_seq_length)
        vectors = np.zeros((len(texts), self.model.get_embedding_dimension()), dtype=np.float32)
        for rows, batch in zip(*padded_batches(tokenizer, encoded, self.BATCH)):
            tokens = self._graph(batch)
            if self.pooling == "cls":
                pooled = tokens[:, 0]
            else:
                mask = batch["attention_mask"][..., None].astype(np.float32)
                pooled = (tokens * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
            vectors[rows] = pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        return vectors
