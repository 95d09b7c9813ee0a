"""What this CPU multiplies fast, measured once per machine, and the warnings where a path runs slowly."""

import warnings

import numpy as np
import pytest
import torch

from rag_rerank import CrossEncoderReranker

pytest.importorskip("onnxruntime")


def _a_process_not_measured_yet(monkeypatch) -> None:
    """``cpu.matmul_speedup`` with an empty in-process cache, as in a new process; the session's own
    cached rates are left as they are."""
    import functools

    from rag_rerank.inference import cpu

    monkeypatch.setattr(cpu, "matmul_speedup", functools.cache(cpu.matmul_speedup.__wrapped__))


def test_matmul_speedup_is_float32_time_over_the_kinds_time_measured_once_per_machine(monkeypatch, tmp_path):
    from rag_rerank.inference import cpu

    timed: list[str] = []

    def fake_seconds(run):  # float32 takes 2 s, int8 0.5 s, bfloat16 8 s; the first round is disturbed
        name = "int8" if run.func.__name__ == "_int_mm" else str(run.args[0].dtype).removeprefix("torch.")
        timed.append(name)
        return {"float32": 2.0, "int8": 0.5, "bfloat16": 8.0}[name] * (3 if len(timed) <= 2 else 1)

    monkeypatch.setenv("RAG_RERANK_CACHE", str(tmp_path))  # the session's real measurement stays as it is
    monkeypatch.setattr(cpu, "seconds_of", fake_seconds)
    _a_process_not_measured_yet(monkeypatch)
    assert cpu.matmul_speedup("int8") == 4.0 and cpu.matmul_speedup("bfloat16") == 0.25
    assert cpu.matmul_speedup("int8") == 4.0  # measured once per kind, float32 and the kind in turns
    assert timed == ["float32", "int8"] * cpu.MEASUREMENT_ROUNDS + ["float32", "bfloat16"] * cpu.MEASUREMENT_ROUNDS
    assert "0.25x" in cpu.slow_precision("torch", "bfloat16") and cpu.slow_precision("torch-int8", "float32") is None

    # another process on this machine reads the saved rates instead of measuring (its choice is the same)
    _a_process_not_measured_yet(monkeypatch)
    assert (cpu.matmul_speedup("int8"), cpu.matmul_speedup("bfloat16")) == (4.0, 0.25)
    assert len(timed) == 4 * cpu.MEASUREMENT_ROUNDS
    machine = f"cpu-{cpu.identity()}-torch-{torch.__version__}"
    assert sorted(tmp_path.glob("cpu-*.json")) == [tmp_path / f"{machine}-{kind}.json" for kind in ("bfloat16", "int8")]


def test_matmul_speedup_is_measured_where_the_cache_cannot_be_written(monkeypatch, tmp_path):
    from rag_rerank.inference import cpu

    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("RAG_RERANK_CACHE", str(blocked / "cache"))  # its parent is a file: cannot be made
    monkeypatch.setattr(cpu, "seconds_of", lambda run: 1.0)
    _a_process_not_measured_yet(monkeypatch)
    assert cpu.matmul_speedup("bfloat16") == 1.0


@pytest.mark.parametrize("speedup,warns", [(0.04, True), (3.5, False)])
def test_a_fast_path_this_cpu_runs_slowly_is_flagged_with_the_fix(tiny_cross_encoder_path, monkeypatch, speedup, warns):

    import rag_rerank.inference.cpu

    monkeypatch.setattr(
        rag_rerank.inference.cpu, "matmul_speedup", lambda kind: speedup
    )  # stands in for the CPU's rate
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        CrossEncoderReranker(tiny_cross_encoder_path, backend="torch-int8", device="cpu")
        CrossEncoderReranker(tiny_cross_encoder_path, dtype="bfloat16", device="cpu", backend="torch")
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    if warns:
        assert len(messages) == 2 and all("backend='onnx-int8'" in m for m in messages)
        assert "int8 matrices at 0.04x" in messages[0] and "bfloat16 matrices" in messages[1]
    else:
        assert messages == []


def openvino_has_bfloat16() -> bool:
    import openvino

    return "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def test_openvino_bfloat16_on_a_cpu_that_runs_it_slowly_is_flagged(tiny_cross_encoder_path, monkeypatch):
    """Where OpenVINO runs bfloat16 but the CPU multiplies it slowly (AVX-512 without BF16), the
    reranker says so and names what runs."""
    pytest.importorskip("openvino")
    if not openvino_has_bfloat16():
        pytest.skip("OpenVINO runs float32 on this CPU when asked for bfloat16 (the test below)")
    import rag_rerank.inference.cpu

    monkeypatch.setattr(rag_rerank.inference.cpu, "matmul_speedup", lambda kind: 0.3)  # stands in for the CPU's rate
    with pytest.warns(RuntimeWarning, match="bfloat16 matrices at 0.30x .* slower than float32 here"):
        reranker = CrossEncoderReranker(tiny_cross_encoder_path, backend="openvino", dtype="bfloat16", device="cpu")
    assert reranker.dtype == "bfloat16"


def test_openvino_asked_for_bfloat16_without_its_kernels_says_it_runs_float32(tiny_cross_encoder_path, passages):
    """On a CPU without AVX-512 OpenVINO ignores a bfloat16 hint: ``dtype`` must say float32, and the
    warning must not claim a slowdown that does not happen (run here as: benchmarks/emulate_cpu.py avx2)."""
    pytest.importorskip("openvino")
    if openvino_has_bfloat16():
        pytest.skip("this CPU has bfloat16 kernels: OpenVINO runs what it is asked")
    with pytest.warns(RuntimeWarning, match="OpenVINO runs this model in float32, not bfloat16") as caught:
        reranker = CrossEncoderReranker(tiny_cross_encoder_path, backend="openvino", dtype="bfloat16", device="cpu")
    assert reranker.dtype == "float32" and not any("slower than float32" in str(w.message) for w in caught)
    exact = CrossEncoderReranker(tiny_cross_encoder_path, backend="openvino", device="cpu")
    assert np.allclose(reranker.score("a wing", passages), exact.score("a wing", passages), atol=1e-5)


def test_tune_allocator_applies_on_glibc():
    import platform

    from rag_rerank import tune_allocator

    assert tune_allocator() is (platform.libc_ver()[0] == "glibc")
