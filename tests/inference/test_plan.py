"""auto's plan: decided once per machine, model and runtimes, saved, read before anything is built;
pinned by a file; never taken from another machine."""

import json
from pathlib import Path

import pytest
from cpu_helpers import a_cpu_where, skip_without_openvino_bfloat16

from rag_rerank import CrossEncoderReranker
from rag_rerank.inference import auto, export
from rag_rerank.models import SHIPPED_CROSS_ENCODER

pytest.importorskip("onnxruntime")

SHIPPED = str(SHIPPED_CROSS_ENCODER)


def counted(monkeypatch, module, name):
    """``module.name`` still runs, and each call's first arguments are kept in the returned list."""
    calls, real = [], getattr(module, name)

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counting)
    return calls


def test_a_warm_construction_reads_the_plan_and_builds_only_its_engine(monkeypatch):
    """The first construction on a machine decides (builds the candidate, float32 and int8, checks
    and times them) and saves the plan; the next reads it and builds the one engine it names, the
    weights hashed once, and scores as the first did."""
    a_cpu_where(monkeypatch, 3.3, {"onnxruntime", "openvino"})  # the richest decision: bfloat16 vs int8
    first = CrossEncoderReranker(SHIPPED, device="cpu", max_length=128)
    plan_file = first.plan.path
    assert plan_file and first.plan.source in ("measured", "saved")
    saved = json.loads(Path(plan_file).read_text())
    assert saved["plan"]["backend"] == first.backend and saved["key"]["model"] in plan_file
    builds, hashes = counted(monkeypatch, auto, "load_backend"), counted(monkeypatch, export, "_hashed")
    warm = CrossEncoderReranker(SHIPPED, device="cpu", max_length=128)
    assert warm.plan.source == "saved" and (warm.backend, warm.dtype) == (first.backend, first.dtype)
    assert [call[0] for call in builds] == [warm.backend]  # one engine: the plan's
    assert len(hashes) == 1  # the weights fingerprinted once, though the plan and the graph both ask
    passages = ["a wing in a slipstream", "boundary layers thicken downstream", "bread goes stale"]
    assert warm.score("wing lift", passages) == first.score("wing lift", passages)


def test_a_plan_from_another_machine_is_never_used(monkeypatch, caplog):
    """A plan file copied from another CPU (its key names that CPU) into this machine's place is
    ignored: this machine decides for itself and overwrites it."""
    a_cpu_where(monkeypatch, 0.02, {"onnxruntime"})
    mine = CrossEncoderReranker(SHIPPED, device="cpu", max_length=128)
    plan_file = mine.plan.path
    record = json.loads(Path(plan_file).read_text())
    other = {**record, "key": {**record["key"], "cpu": "another-cpu0"}, "plan": {**record["plan"], "backend": "torch"}}
    with open(plan_file, "w") as copied:
        json.dump(other, copied)
    with caplog.at_level("INFO", logger="rag_rerank"):
        again = CrossEncoderReranker(SHIPPED, device="cpu", max_length=128)
    assert "is for another machine" in caplog.text
    assert again.plan.source == "measured" and again.backend == mine.backend == "onnx-int8"
    assert json.loads(Path(plan_file).read_text())["key"] == record["key"]  # this machine's again


def test_a_pin_runs_its_path_everywhere_and_says_what_is_wrong_with_a_bad_one(
    monkeypatch, tmp_path, tiny_cross_encoder_path
):
    """RAG_RERANK_PLAN pins auto's choice (a fleet runs one path); a pinned lossy path is still
    checked against float32 (the tiny random model's bfloat16 ranks unlike it: float32 runs); a pin
    this machine cannot run, or that names no path, is refused with the fix."""
    from rag_rerank.inference.plan import Plan, write_pins

    pins = tmp_path / "plan.json"
    monkeypatch.setenv("RAG_RERANK_PLAN", str(pins))
    write_pins([Plan("cross-encoder", "onnx", "float32", "the exact graph")], pins)
    a_cpu_where(monkeypatch, 3.3, {"onnxruntime", "openvino"})  # auto alone would pick OpenVINO bfloat16
    pinned = CrossEncoderReranker(tiny_cross_encoder_path, device="cpu")
    assert (pinned.backend, pinned.dtype) == ("onnx", "float32") and "pinned by RAG_RERANK_PLAN" in pinned.plan.why
    write_pins([Plan("cross-encoder", "torch", "bfloat16", "half the memory")], pins)
    checked = CrossEncoderReranker(tiny_cross_encoder_path, device="cpu")
    assert (checked.backend, checked.dtype) == ("torch", "float32")
    assert "bfloat16 ranked unlike float32" in checked.plan.why
    write_pins([Plan("cross-encoder", "onnx", "float32", "")], pins)
    a_cpu_where(monkeypatch, 3.3, set())  # ONNX Runtime not installed here
    with pytest.raises(ValueError, match=r"onnxruntime is not installed here: pip install 'rag-rerank\[onnx\]'"):
        CrossEncoderReranker(tiny_cross_encoder_path, device="cpu")
    pins.write_text(json.dumps({"cross-encoder": {"backend": "onnx", "dtype": "bfloat16"}}))
    with pytest.raises(ValueError, match="onnx: float32"):  # what it could pin instead
        CrossEncoderReranker(tiny_cross_encoder_path, device="cpu")
    pins.write_text("{not json")
    with pytest.raises(ValueError, match="cannot be read as a plan.*doctor --write"):
        CrossEncoderReranker(tiny_cross_encoder_path, device="cpu")


def test_a_timing_within_noise_of_its_threshold_is_measured_again_then_the_closer_path_wins(monkeypatch):
    """int8 must be INT8_MUST_BE_FASTER than OpenVINO's bfloat16; a first timing within TIMING_NOISE of
    that is measured a second time, and where the two together stay within noise bfloat16 (closer to
    float32) runs: machines of one class choose alike. (The timings are the saved measurement files,
    edited; the plan rests on them, so editing one re-plans.)"""
    from rag_rerank.inference import cpu

    def auto_reranker() -> CrossEncoderReranker:
        return CrossEncoderReranker(SHIPPED, device="cpu", max_length=128)

    skip_without_openvino_bfloat16()
    a_cpu_where(monkeypatch, 3.3, {"onnxruntime", "openvino"})
    measured = auto_reranker()
    graph = CrossEncoderReranker(SHIPPED, device="cpu", backend="onnx-int8")._engine.session.path
    first = graph.with_name(f"{graph.name}.speedup-openvino-bfloat16-{cpu.identity()}.json")
    second = first.with_name(first.name.replace(".json", "-attempt2.json"))
    saved = json.loads(first.read_text())
    if measured.plan.measured.get("int8_kendall_tau", 1) < 0.8:
        pytest.skip("int8 ranks unlike float32 on this CPU: no timing decides")
    try:
        for timings, expected in [
            ((1.06, 1.04), "openvino"),  # within noise twice: the path closer to float32
            ((1.06, 1.30), "onnx-int8"),  # the second timing settles it
            ((1.40, 0.50), "onnx-int8"),  # clear the first time: no second timing read
        ]:
            first.write_text(json.dumps({**saved, "speedup": timings[0]}))
            second.write_text(json.dumps({**saved, "speedup": timings[1]}))
            reranker = auto_reranker()
            assert reranker.backend == expected, timings
            assert reranker.plan.source == "measured"  # the edited timing made it decide again
    finally:
        first.write_text(json.dumps(saved))
        second.unlink(missing_ok=True)
