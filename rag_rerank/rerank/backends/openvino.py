"""OpenVINO execution of a cross-encoder: the plain ONNX export (``backends.onnx``) compiled by
OpenVINO's CPU plugin, in float32 (exact) or, with ``dtype="bfloat16"``, OpenVINO's bfloat16
kernels on CPUs with AVX-512 BF16 or AMX (1.5x torch's bfloat16 on the shipped model, same
agreement with float32: README, Speed), or with ``dtype="int8"`` int8 weights and activations in
groups of 32 channels (``int8_weights``; the bi-encoder's path on CPUs with VNNI but no BF16).
Needs ``pip install 'rag-rerank[openvino]'``. The compiled graph is cached under
``RAG_RERANK_CACHE``, so later processes start faster.
"""

from __future__ import annotations

import hashlib
import json
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rag_rerank.cpu import slow_precision
from rag_rerank.rerank.backends.graph_cache import cache_root
from rag_rerank.rerank.backends.onnx import exported_model, feeds

OPENVINO_BATCH_SIZE = 8  # pairs sorted by length, so little padding; 1.1x over 1 and 16 (measured)
PRECISION = {"float32": "f32", "bfloat16": "bf16", "float16": "f16", "int8": "f32"}  # int8: int8_weights
RAN = {"f32": "float32", "bf16": "bfloat16", "f16": "float16"}
INT8_GROUP = 32  # input channels per scale, for the int8 weights and the activations alike


class CompiledGraph:
    """The ONNX file at ``path`` compiled by OpenVINO for the CPU in ``dtype`` (cached under
    ``RAG_RERANK_CACHE``/openvino), called with a padded batch of token ids.

    One inference request serves every thread, one batch at a time: a request is not thread-safe
    ("Infer Request is busy"), and each batch already uses all CPU threads. ``dtype`` becomes what
    OpenVINO runs: asked for bfloat16 on a CPU without AVX-512 it quietly runs float32 (warned here),
    while on AVX-512 without BF16 it runs bfloat16 slowly (warned here too)."""

    def __init__(self, path: Path, dtype: str):
        try:
            import openvino
        except ImportError as error:
            raise ImportError("the OpenVINO backend needs OpenVINO: pip install 'rag-rerank[openvino]'") from error
        config = {"INFERENCE_PRECISION_HINT": PRECISION[dtype], "PERFORMANCE_HINT": "LATENCY"}
        if dtype == "int8":
            config["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = str(INT8_GROUP)
        core = openvino.Core()
        core.set_property({"CACHE_DIR": str(compiled_cache(dtype, config, openvino.get_version()))})
        graph: Any = str(path) if dtype != "int8" else int8_weights(core.read_model(str(path)))
        model = core.compile_model(graph, "CPU", config)
        self.dtype = (
            dtype if dtype == "int8" else RAN.get(model.get_property("INFERENCE_PRECISION_HINT").get_type_name(), dtype)
        )
        if self.dtype != dtype:
            warnings.warn(
                f"OpenVINO runs this model in {self.dtype}, not {dtype}: this CPU has no {dtype} kernels "
                "(AVX-512 BF16 or AMX), so dtype='float32' is the same and says what runs",
                RuntimeWarning,
                stacklevel=2,
            )
        elif reason := slow_precision("openvino", dtype):
            warnings.warn(f"{reason}, so dtype={dtype!r} is slower than float32 here", RuntimeWarning, stacklevel=2)
        self._request = model.create_infer_request()
        self._inputs = [port.get_any_name() for port in model.inputs]
        self._lock = threading.Lock()

    def __call__(self, batch: Any) -> np.ndarray:
        """The first output for one padded batch of token ids."""
        with self._lock:  # a copy: the request reuses its output buffer
            return np.array(self._request.infer(feeds(batch, self._inputs))[0])


def compiled_cache(dtype: str, config: dict[str, str], version: str) -> Path:
    """The folder OpenVINO caches compiled blobs in for one configuration: its own per precision and
    option set. OpenVINO's cache key leaves the precision hint out, so with one shared folder a
    bfloat16 compile was served the float32 blob of the same graph (NaN scores or a corrupted heap
    on AMX CPUs), and the other way round."""
    key = hashlib.sha256(json.dumps({"config": config, "openvino": version}, sort_keys=True).encode()).hexdigest()
    return cache_root() / "openvino" / f"{dtype}-{key[:12]}"


def int8_weights(model: Any) -> Any:
    """``model`` with each constant MatMul weight stored as int8, one scale per ``INT8_GROUP`` input
    channels of each output column (symmetric), dequantised in the graph: OpenVINO's CPU plugin
    recognises that pattern and, with ``DYNAMIC_QUANTIZATION_GROUP_SIZE``, also quantises each
    activation row per group at run time, so the MatMuls run int8 x int8 on VNNI/AMX. Groups that
    small keep all-MiniLM-L6-v2's vectors at cosine 0.9997 to float32 (one scale per column: 0.9993)."""
    import openvino
    import openvino.opset13 as ops

    for node in model.get_ordered_ops():
        weight = node.input_value(1).get_node() if node.get_type_name() == "MatMul" else None
        if weight is None or weight.get_type_name() != "Constant" or len(weight.get_output_shape(0)) != 2:
            continue
        w = weight.get_data().astype(np.float32)
        rows = w.T if node.get_attributes().get("transpose_b", False) else w  # [in, out]
        inputs, outputs = rows.shape
        group = INT8_GROUP if inputs % INT8_GROUP == 0 else inputs
        grouped = rows.reshape(inputs // group, group, outputs)
        scale = np.maximum(np.abs(grouped).max(axis=1, keepdims=True), 1e-12) / 127
        q = np.clip(np.round(grouped / scale), -127, 127).astype(np.int8)
        dequantised = ops.multiply(ops.convert(ops.constant(q), openvino.Type.f32), ops.constant(scale))
        flat = ops.reshape(dequantised, ops.constant(np.array([inputs, outputs], np.int64)), special_zero=False)
        if rows is not w:
            flat = ops.transpose(flat, ops.constant(np.array([1, 0], np.int64)))
        node.input(1).replace_source_output(flat.output(0))
    return model


class OpenVinoBackend:
    """OpenVINO's compiled graph of the cross-encoder; all CPU threads on each batch."""

    def __init__(self, model: Any, *, batch_size: int | None, compile: bool = False, dtype: str = "float32"):
        self.model = model
        self.batch_size = batch_size or OPENVINO_BATCH_SIZE
        self._graph: CompiledGraph | None = CompiledGraph(exported_model(model.model), dtype)
        self.dtype = self._graph.dtype  # what OpenVINO runs

    def logits(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        from rag_rerank.rerank.backends import length_batches, scatter

        rows, batches = length_batches(self.model, pairs, self.batch_size)
        if self._graph is None:
            raise RuntimeError("this reranker was closed")
        return scatter(rows, map(self._graph, batches), len(pairs))

    def close(self) -> None:
        self._graph = None
