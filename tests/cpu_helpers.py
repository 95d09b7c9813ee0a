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
    """Whether OpenVINO's CPU plugin has bfloat16 kernels on this machine (AVX-512 BF16 or AMX), as the
    runtime itself says: a faked matmul probe cannot give OpenVINO kernels the CPU lacks."""
    import openvino

    return "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def skip_without_openvino_bfloat16() -> None:
    """For tests of what auto does with OpenVINO's bfloat16 (timings against it): nothing to run without it."""
    import pytest

    if not openvino_has_bfloat16():
        pytest.skip("OpenVINO has no bfloat16 kernels on this CPU (AVX-512 BF16 or AMX): nothing to time against")
