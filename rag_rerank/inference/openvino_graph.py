"""OpenVINO's compiled graph of an ONNX export, shared by both encoders: compiled by the CPU plugin
in float32, bfloat16 (CPUs with AVX-512 BF16 or AMX) or int8 (``quantize.int8_weights``), and
cached per compiled configuration. Needs ``pip install 'rag-rerank[openvino]'``."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from rag_rerank.inference.cache import cache_root, made_folder
from rag_rerank.inference.cpu import identity, slow_precision
from rag_rerank.inference.quantize import INT8_GROUP, int8_weights
from rag_rerank.inference.tokens import feeds

log = logging.getLogger(__name__)

PRECISION = {"float32": "f32", "bfloat16": "bf16", "float16": "f16", "int8": "f32"}  # int8: int8_weights

RAN = {"f32": "float32", "bf16": "bfloat16", "f16": "float16"}


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
        folder = compiled_cache(dtype, config, openvino.get_version())
        try:
            core.set_property({"CACHE_DIR": str(made_folder(folder))})
        except OSError as error:  # a read-only cache filled on another CPU: compile, keep nothing
            log.info("OpenVINO compiles %s without a cache (%s)", path.name, error)
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
    on AMX CPUs), and the other way round. The CPU is part of the key too: a cache folder shared
    between machines (a network home, a container image built elsewhere) serves each its own."""
    described = {"config": config, "openvino": version, "cpu": identity()}  # a shared folder may serve other CPUs
    key = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()
    return cache_root() / "openvino" / f"{dtype}-{key[:12]}"
