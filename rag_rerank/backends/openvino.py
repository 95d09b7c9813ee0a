"""OpenVINO execution of a cross-encoder: the plain ONNX export (``backends.onnx``) compiled by
OpenVINO's CPU plugin, in float32 (exact) or, with ``dtype="bfloat16"``, OpenVINO's bfloat16
kernels on CPUs with AVX-512 BF16 or AMX (1.5x torch's bfloat16 on the shipped model, same
agreement with float32: README, Speed). Needs ``pip install 'rag-rerank[openvino]'``. The compiled
graph is cached under ``RAG_RERANK_CACHE``, so later processes start faster.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rag_rerank.backends.onnx import cache_root, exported_model, feeds

OPENVINO_BATCH_SIZE = 8  # pairs sorted by length, so little padding; 1.1x over 1 and 16 (measured)
PRECISION = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}


def compiled(path: Path, dtype: str) -> tuple[Any, list[str]]:
    """An inference request over the ONNX file at ``path``, compiled for the CPU in ``dtype``; and
    its input names. The compiled graph is cached (``RAG_RERANK_CACHE``/openvino)."""
    try:
        import openvino
    except ImportError as error:
        raise ImportError("the OpenVINO backend needs OpenVINO: pip install 'rag-rerank[openvino]'") from error
    core = openvino.Core()
    core.set_property({"CACHE_DIR": str(cache_root() / "openvino")})
    config = {"INFERENCE_PRECISION_HINT": PRECISION[dtype], "PERFORMANCE_HINT": "LATENCY"}
    model = core.compile_model(str(path), "CPU", config)
    return model.create_infer_request(), [port.get_any_name() for port in model.inputs]


def infer(request: Any, inputs: list[str], batch: Any) -> np.ndarray:
    """The first output for one padded batch of token ids."""
    return np.array(request.infer(feeds(batch, inputs))[0])  # a copy: the request reuses its output buffer


class OpenVinoBackend:
    """OpenVINO's compiled graph; one inference request, all CPU threads on each batch."""

    def __init__(self, model: Any, *, batch_size: int | None, compile: bool = False, dtype: str = "float32"):
        self.model = model
        self.batch_size = batch_size or OPENVINO_BATCH_SIZE
        self._request, self._inputs = compiled(exported_model(model.model), dtype)

    def logits(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        from rag_rerank.backends import length_batches, scatter

        rows, batches = length_batches(self.model, pairs, self.batch_size)
        return scatter(rows, (infer(self._request, self._inputs, batch) for batch in batches), len(pairs))

    def close(self) -> None:
        self._request = None
