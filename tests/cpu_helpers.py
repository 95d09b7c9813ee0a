"""This machine as another CPU, for the tests of ``backend="auto"``'s choices."""

from __future__ import annotations


def a_cpu_where(monkeypatch, bfloat16: float, installed: set[str]) -> None:
    """This machine as a CPU that multiplies bfloat16 ``bfloat16`` times as fast as float32, with only
    ``installed`` of the optional runtimes (the real ones run: nothing else is faked)."""
    import importlib.util

    from rag_rerank.inference import cpu

    real_find_spec = importlib.util.find_spec
    optional = {"onnxruntime", "openvino"}
    monkeypatch.setattr(cpu, "matmul_speedup", lambda kind: bfloat16)
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name: None if name in optional - installed else real_find_spec(name),
    )


def openvino_has_bfloat16() -> bool:
    """Whether OpenVINO runs bfloat16 on this machine, as the product asks it: a one-MatMul graph compiled
    with the bfloat16 hint, and the precision it says it runs (float32 on AVX2; bfloat16 with AVX-512,
    fast only with BF16 or AMX). A faked matmul probe cannot give OpenVINO kernels the CPU lacks."""
    import numpy as np
    import openvino
    import openvino.opset13 as ops

    x = ops.parameter([1, 8], np.float32)
    graph = openvino.Model([ops.matmul(x, ops.constant(np.ones((8, 8), np.float32)), False, False)], [x])
    compiled = openvino.Core().compile_model(graph, "CPU", {"INFERENCE_PRECISION_HINT": "bf16"})
    return compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == "bf16"


def skip_without_openvino_bfloat16() -> None:
    """For tests of what auto does with OpenVINO's bfloat16 (timings against it): nothing to run without it."""
    import pytest

    if not openvino_has_bfloat16():
        pytest.skip("OpenVINO runs no bfloat16 on this CPU (it has no AVX-512): nothing to time int8 against")
