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
