"""The cross-encoder on OpenVINO: its plain ONNX export compiled for the CPU (``openvino_graph``),
in float32 (exact) or bfloat16; all CPU threads on each batch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rag_rerank.inference.export import exported_model
from rag_rerank.inference.openvino_graph import CompiledGraph
from rag_rerank.inference.tokens import length_batches, scatter

OPENVINO_BATCH_SIZE = 8  # pairs sorted by length, so little padding; 1.1x over 1 and 16 (measured)


class OpenVinoBackend:
    """OpenVINO's compiled graph of the cross-encoder; all CPU threads on each batch."""

    def __init__(self, model: Any, *, batch_size: int | None, compile: bool = False, dtype: str = "float32"):
        self.model = model
        self.batch_size = batch_size or OPENVINO_BATCH_SIZE
        self._graph: CompiledGraph | None = CompiledGraph(exported_model(model.model), dtype)
        self.dtype = self._graph.dtype  # what OpenVINO runs

    def logits(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        rows, batches = length_batches(self.model, pairs, self.batch_size)
        if self._graph is None:
            raise RuntimeError("this reranker was closed")
        return scatter(rows, map(self._graph, batches), len(pairs))

    def close(self) -> None:
        self._graph = None
