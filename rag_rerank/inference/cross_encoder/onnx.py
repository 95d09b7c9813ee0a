"""The cross-encoder on ONNX Runtime: the fused float32 graph, or int8 with one activation scale per
token (``optimize``, ``quantize``). Needs ``pip install 'rag-rerank[onnx]'``."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from rag_rerank.inference.optimize import prepared_graph
from rag_rerank.inference.tokens import feeds, length_batches, scatter


class OnnxCrossEncoder:
    """Runs ``logits = model(input_ids, attention_mask[, token_type_ids])`` in ONNX Runtime.

    ``threads`` batches run side by side, each on one CPU thread, rather than each batch split
    across all threads: a MiniLM batch is too small for ONNX Runtime to split without its
    threads waiting on each other.
    """

    def __init__(self, hf_model: Any, *, quantize: bool, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError as error:
            raise ImportError(
                "backend='onnx' needs ONNX Runtime: pip install 'rag-rerank[onnx]' (onnx, onnxruntime, onnxscript)"
            ) from error
        path = prepared_graph(hf_model, quantize)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = 1
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._inputs = [i.name for i in self._session.get_inputs()]
        self.path = path
        self.threads = max(1, threads or os.cpu_count() or 1)
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="onnx") if self.threads > 1 else None

    def close(self) -> None:
        """Stop the worker threads (the session itself is freed with the object)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __call__(self, features: dict[str, np.ndarray]) -> np.ndarray:
        return self._session.run(None, feeds(features, self._inputs))[0]

    def run_all(self, batches: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
        """The logits of each batch, in order; ONNX Runtime releases the GIL, so threads run in parallel."""
        if self._pool is None or len(batches) < 2:
            return [self(batch) for batch in batches]
        return list(self._pool.map(self, batches))


def torch_threads() -> int:
    """The threads torch computes with, without importing it where it is not imported (1-2 s): as torch
    counts them, ``MKL_NUM_THREADS``, else ``OMP_NUM_THREADS``, else the CPU's physical cores."""
    if "torch" in sys.modules:
        return int(sys.modules["torch"].get_num_threads())
    for variable in ("MKL_NUM_THREADS", "OMP_NUM_THREADS"):
        if (value := os.environ.get(variable, "")).isdigit() and int(value) > 0:
            return int(value)
    return _physical_cores() or os.cpu_count() or 1


def _physical_cores() -> int | None:
    """The CPU's cores, each counted once however many hardware threads it runs (Linux; else None)."""
    try:
        processors = Path("/proc/cpuinfo").read_text().strip().split("\n\n")
    except OSError:
        return None
    cores = set()
    for processor in processors:
        fields = {
            key.strip(): value.strip() for key, _, value in (line.partition(":") for line in processor.splitlines())
        }
        if "core id" not in fields:  # not told here: the caller counts every processor
            return None
        cores.add((fields.get("physical id"), fields["core id"]))
    return len(cores)


ONNX_BATCH_SIZE = 1  # one pair per batch, the CPU threads side by side: no padding (1.2x over 8 on AVX2)


class OnnxBackend:
    """ONNX Runtime over the exported, fused graph (``quantize``: int8, one scale per token)."""

    def __init__(
        self,
        model: Any,
        *,
        batch_size: int | None,
        compile: bool = False,
        dtype: str = "float32",
        quantize: bool = False,
    ):
        self.model = model
        self.batch_size = batch_size or ONNX_BATCH_SIZE
        self.dtype = "float32"  # the graph's; onnx-int8 says int8 by its name
        self.session = OnnxCrossEncoder(model.model, quantize=quantize, threads=torch_threads())

    def logits(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        rows, batches = length_batches(self.model, pairs, self.batch_size)
        return scatter(rows, self.session.run_all(batches), len(pairs))

    def close(self) -> None:
        self.session.close()


def int8(model: Any, *, batch_size: int | None, compile: bool = False, dtype: str = "float32") -> OnnxBackend:
    return OnnxBackend(model, batch_size=batch_size, quantize=True)
