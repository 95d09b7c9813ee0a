"""backend="auto": the fastest path that keeps rankings on this machine, every lossy one checked."""

import pytest
import torch
from cpu_helpers import a_cpu_where, skip_without_openvino_bfloat16
from scipy.stats import kendalltau

from rag_rerank import CrossEncoderReranker

pytest.importorskip("onnxruntime")


@pytest.mark.parametrize(
    "bfloat16,installed,expected",
    [
        (3.3, {"onnxruntime", "openvino"}, ("openvino", "bfloat16")),  # AVX-512 BF16 or AMX: OpenVINO's bf16
        (3.3, {"onnxruntime"}, ("torch", "bfloat16")),  # ... torch's without OpenVINO
        (0.02, {"onnxruntime", "openvino"}, ("onnx-int8", "float32")),  # AVX2 or VNNI only: int8, if it agrees
        (1.1, {"onnxruntime", "openvino"}, ("onnx-int8", "float32")),  # bfloat16 barely faster: not worth it
        (0.02, {"openvino"}, ("torch", "float32")),  # no ONNX Runtime
        (0.02, set(), ("torch", "float32")),  # neither runtime installed
    ],
)
def test_auto_picks_the_fastest_path_that_keeps_rankings(monkeypatch, bfloat16, installed, expected):
    from rag_rerank.inference.auto import choose

    a_cpu_where(monkeypatch, bfloat16, installed)
    choice = choose("cpu")
    assert (choice.backend, choice.dtype) == expected


def test_auto_checks_bfloat16_against_float32_before_running_it(tiny_cross_encoder_path, monkeypatch, caplog, tmp_path):
    """bfloat16 is lossy too: auto keeps it only where it ranks the calibration pairs as float32 does,
    checked once per CPU and model. The tiny random model's logits are all but equal, so bfloat16's
    rounding reorders them: float32 runs, and says why; a cached verdict that agrees keeps bfloat16."""
    monkeypatch.setenv("RAG_RERANK_CACHE", str(tmp_path))  # its verdicts stay its own
    import json

    from rag_rerank.inference.calibration import verdict_path

    a_cpu_where(monkeypatch, 3.3, {"onnxruntime"})
    with caplog.at_level("WARNING", logger="rag_rerank"):
        checked = CrossEncoderReranker(tiny_cross_encoder_path, device="cpu")  # backend="auto" is the default
    assert (checked.backend, checked.dtype) == ("torch", "float32")
    assert "in bfloat16 ranks the calibration pairs differently" in caplog.text
    bfloat16 = CrossEncoderReranker(tiny_cross_encoder_path, device="cpu", dtype="bfloat16")  # a dtype means torch
    assert (bfloat16.backend, bfloat16.dtype) == ("torch", "bfloat16")  # asked for: runs unchecked
    verdict = verdict_path(bfloat16._model.model, "torch-bfloat16")
    assert json.loads(verdict.read_text())["kendall_tau"] < 0.8
    verdict.write_text(json.dumps({**json.loads(verdict.read_text()), "kendall_tau": 0.99}))  # read, not measured
    reranker = CrossEncoderReranker(tiny_cross_encoder_path, device="cpu")
    assert (reranker.backend, reranker.dtype) == ("torch", "bfloat16")
    assert reranker.score("wing", ["a wing in a slipstream"])  # and it runs
    explicit = CrossEncoderReranker(tiny_cross_encoder_path, device="cpu", dtype="float32")  # a dtype means torch
    assert (explicit.backend, explicit.dtype) == ("torch", "float32")


def test_auto_keeps_int8_where_it_ranks_as_float32_does(monkeypatch, passages, caplog):
    """The shipped model's int8 graph passes the calibration check; the verdict is cached beside it."""
    import json

    from rag_rerank.inference.calibration import AGREEMENT
    from rag_rerank.models import SHIPPED_CROSS_ENCODER

    a_cpu_where(monkeypatch, 0.02, {"onnxruntime"})
    with caplog.at_level("INFO", logger="rag_rerank"):
        reranker = CrossEncoderReranker(str(SHIPPED_CROSS_ENCODER), device="cpu", max_length=128)
    assert reranker.backend == "onnx-int8"
    from rag_rerank.inference import cpu

    verdict = reranker._engine.session.path.with_name(f"model-int8.onnx.agreement-{cpu.identity()}.json")
    saved = json.loads(verdict.read_text())
    assert saved["kendall_tau"] >= AGREEMENT
    assert "ranks as float32 does" in caplog.text
    verdict.write_text(json.dumps({**saved, "kendall_tau": 0.1}))  # the next construction reads the verdict
    assert CrossEncoderReranker(str(SHIPPED_CROSS_ENCODER), device="cpu", max_length=128).backend == "onnx"
    verdict.write_text(json.dumps(saved))
    exact = CrossEncoderReranker(str(SHIPPED_CROSS_ENCODER), device="cpu", max_length=128, backend="onnx")
    query = "pressure distribution on a slender wing"
    assert kendalltau(reranker.score(query, passages), exact.score(query, passages)).statistic > 0.85


def test_auto_takes_int8_over_bfloat16_only_where_it_measures_faster(monkeypatch, caplog):
    """Where bfloat16 pays and both runtimes are installed, auto times ONNX Runtime's int8 against
    OpenVINO's bfloat16 once per CPU and model (the verdict is cached beside the int8 graph) and runs
    int8 only if it is at least 1.05x faster and agrees with float32."""
    import json

    from rag_rerank.inference import cpu
    from rag_rerank.inference.auto import INT8_MUST_BE_FASTER, TIMING_NOISE
    from rag_rerank.models import SHIPPED_CROSS_ENCODER

    def auto() -> CrossEncoderReranker:
        return CrossEncoderReranker(str(SHIPPED_CROSS_ENCODER), device="cpu", max_length=128)

    skip_without_openvino_bfloat16()
    a_cpu_where(monkeypatch, 3.3, {"onnxruntime", "openvino"})
    with caplog.at_level("INFO", logger="rag_rerank"):
        measured = auto()
    graph = CrossEncoderReranker(str(SHIPPED_CROSS_ENCODER), device="cpu", backend="onnx-int8")._engine.session.path
    verdict = graph.with_name(f"{graph.name}.speedup-openvino-bfloat16-{cpu.identity()}.json")  # this CPU's
    saved = json.loads(verdict.read_text())
    # what decided (within noise of the threshold: two timings together, and then bfloat16 stays)
    faster = measured.plan.measured["int8_speedup"] >= INT8_MUST_BE_FASTER * (1 + TIMING_NOISE)
    assert (measured.backend, measured.dtype) == (("onnx-int8", "float32") if faster else ("openvino", "bfloat16"))
    assert "OpenVINO bfloat16" in caplog.text  # the choice and the measured ratio are logged
    import onnxruntime

    sessions = []
    session = onnxruntime.InferenceSession
    monkeypatch.setattr(onnxruntime, "InferenceSession", lambda *a, **k: sessions.append(a) or session(*a, **k))
    try:
        for speedup, expected in [(0.9, ("openvino", "bfloat16")), (1.6, ("onnx-int8", "float32"))]:
            verdict.write_text(json.dumps({**saved, "speedup": speedup}))  # read, not measured again
            sessions.clear()
            reranker = auto()
            assert (reranker.backend, reranker.dtype) == expected
            assert len(reranker.score("wing", ["a wing in a slipstream", "boundary layers"])) == 2
            # with the verdicts cached, ONNX Runtime opens a session only to run int8
            assert len(sessions) == (expected[0] == "onnx-int8")
        agreement = graph.with_name(f"{graph.name}.agreement-{cpu.identity()}.json")
        agreed = agreement.read_text()
        agreement.write_text(json.dumps({**json.loads(agreed), "kendall_tau": 0.1}))
        try:  # faster, but ranking differently from float32: bfloat16 stays
            assert auto().backend == "openvino"
        finally:
            agreement.write_text(agreed)
    finally:
        verdict.write_text(json.dumps(saved))


@pytest.mark.parametrize("bfloat16", [3.3, 0.02])  # OpenVINO bfloat16 / int8 chosen
def test_auto_runs_torch_where_its_graphs_cannot_be_written_and_an_explicit_backend_says_why(
    tiny_cross_encoder_path, tmp_path, monkeypatch, caplog, bfloat16
):
    """A read-only or full disk (a container's home, a quota): the default reranker and bi-encoder
    still run, in torch float32, and say how to get the fast path back; asked for by name, a graph
    backend refuses with the same words. (The cache here is a path under a file: it cannot be made.)"""
    from rag_rerank import BiEncoder, CacheNotWritable

    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("RAG_RERANK_CACHE", str(tmp_path / "a-file" / "cache"))
    a_cpu_where(monkeypatch, bfloat16, {"onnxruntime", "openvino"})
    with caplog.at_level("WARNING", logger="rag_rerank"):
        reranker = CrossEncoderReranker(tiny_cross_encoder_path, device="cpu")
        bi_encoder = BiEncoder()
    assert (reranker.backend, reranker.dtype) == ("torch", "float32")
    assert (bi_encoder.backend, bi_encoder.dtype) == ("torch", "float32")
    assert len(reranker.score("q", ["a", "b"])) == 2 and bi_encoder.embed_query("q").shape == (384,)
    assert caplog.text.count("set RAG_RERANK_CACHE to a writable folder") == 2
    with pytest.raises(CacheNotWritable, match="RAG_RERANK_CACHE"):
        CrossEncoderReranker(tiny_cross_encoder_path, device="cpu", backend="onnx")
    with pytest.raises(CacheNotWritable, match="RAG_RERANK_CACHE"):
        BiEncoder(backend="openvino")


def test_auto_runs_the_exact_graph_where_int8_ranks_differently(
    minilm_cross_encoder_path, tmp_path, monkeypatch, caplog
):
    """A model with outlier channels (activations 100x the rest, as some larger models have): one int8
    scale per token rounds the ordinary channels away, so auto falls back to exact ONNX and says why."""
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(minilm_cross_encoder_path, device="cpu")
    with torch.no_grad():
        for module in model.model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight[:4] *= 100
                module.bias[:4] *= 100
    model.save(str(tmp_path / "outliers"))
    a_cpu_where(monkeypatch, 0.02, {"onnxruntime"})
    with caplog.at_level("WARNING", logger="rag_rerank"):
        reranker = CrossEncoderReranker(str(tmp_path / "outliers"), device="cpu", max_length=128)
    assert "ranks the calibration pairs differently" in caplog.text
    assert (reranker.backend, reranker.dtype) == ("onnx", "float32")
    exact = CrossEncoderReranker(str(tmp_path / "outliers"), device="cpu", max_length=128, backend="onnx")
    assert reranker.score("wing", ["a wing", "a slipstream"]) == exact.score("wing", ["a wing", "a slipstream"])
    forced = CrossEncoderReranker(str(tmp_path / "outliers"), device="cpu", max_length=128, backend="onnx-int8")
    assert forced.backend == "onnx-int8"  # asked for by name: no check, int8 it is
