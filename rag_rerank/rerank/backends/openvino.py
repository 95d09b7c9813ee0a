"""OpenVINO execution of a cross-encoder: the plain ONNX export (``backends.onnx``) compiled by
OpenVINO's CPU plugin, in float32 (exact) or, with ``dtype="bfloat16"``, OpenVINO's bfloat16
kernels on CPUs with AVX-512 BF16 or AMX (1.5x torch's bfloat16 on the shipped model, same
agreement with float32: README, Speed). Needs ``pip install 'rag-rerank[openvino]'``. The compiled
graph is cached under ``RAG_RERANK_CACHE``, so later processes start faster.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rag_rerank.rerank.backends.graph_cache import cache_root
from rag_rerank.rerank.backends.onnx import exported_model, feeds

OPENVINO_BATCH_SIZE = 8  # pairs sorted by length, so little padding; 1.1x over 1 and 16 (measured)
PRECISION = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}


class CompiledGraph:
    """The ONNX file at ``path`` compiled by OpenVINO for the CPU in ``dtype`` (cached under
    ``RAG_RERANK_CACHE``/openvino), called with a padded batch of token ids.

    One inference request serves every thread, one batch at a time: a request is not thread-safe
    ("Infer Request is busy"), and each batch already uses all CPU threads."""

    def __init__(self, path: Path, dtype: str):
        try:
            import openvino
        except ImportError as error:
            raise ImportError("the OpenVINO backend needs OpenVINO: pip install 'rag-rerank[openvino]'") from error
        core = openvino.Core()
        core.set_property({"CACHE_DIR": str(cache_root() / "openvino")})
        config = {"INFERENCE_PRECISION_HINT": PRECISION[dtype], "PERFORMANCE_HINT": "LATENCY"}
        model = core.compile_model(str(path), "CPU", config)
        self._request = model.create_infer_request()
        self._inputs = [port.get_any_name() for port in model.inputs]
        self._lock = threading.Lock()

    def __call__(self, batch: Any) -> np.ndarray:
        """The first output for one padded batch of token ids."""
        with self._lock:  # a copy: the request reuses its output buffer
            return np.array(self._request.infer(feeds(batch, self._inputs))[0])


class OpenVinoBackend:
    """OpenVINO's compiled graph of the cross-encoder; all CPU threads on each batch."""

    def __init__(self, model: Any, *, batch_size: int | None, compile: bool = False, dtype: str = "float32"):
        self.model = model
        self.batch_size = batch_size or OPENVINO_BATCH_SIZE
        self._graph: CompiledGraph | None = CompiledGraph(exported_model(model.model), dtype)

    def logits(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        from rag_rerank.rerank.backends import length_batches, scatter

        rows, batches = length_batches(self.model, pairs, self.batch_size)
        if self._graph is None:
            raise RuntimeError("this reranker was closed")
        return scatter(rows, map(self._graph, batches), len(pairs))

    def close(self) -> None:
        self._graph = None
