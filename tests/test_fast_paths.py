"""Every scoring backend agrees with CrossEncoder.predict and returns every document."""

import shutil
import warnings

import numpy as np
import pytest
import torch
from scipy.stats import kendalltau

from rag_rerank import CrossEncoderReranker

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def passages(cranfield):
    # real abstracts of mixed length, some longer than the 128-token limit used below
    return [doc.text for doc in cranfield.corpus[:40] if doc.text.strip()]


@pytest.fixture(scope="module")
def reference(minilm_cross_encoder_path, passages):
    baseline = CrossEncoderReranker(
        minilm_cross_encoder_path, backend="sentence-transformers", max_length=128, device="cpu"
    )
    return np.array(baseline.score("pressure distribution on a slender wing", passages))


@pytest.mark.parametrize("backend,tolerance", [("torch", 1e-4), ("onnx", 1e-3), ("openvino", 1e-3)])
def test_exact_backends_match_the_baseline(minilm_cross_encoder_path, passages, reference, backend, tolerance):
    reranker = CrossEncoderReranker(
        minilm_cross_encoder_path, backend=backend, max_length=128, batch_size=8, device="cpu"
    )
    scores = np.array(reranker.score("pressure distribution on a slender wing", passages))
    assert np.abs(scores - reference).max() < tolerance
    assert kendalltau(scores, reference).statistic > 0.99


@pytest.mark.parametrize("backend", ["torch", "onnx", "openvino"])
def test_backends_score_the_same_from_many_threads_at_once(minilm_cross_encoder_path, passages, backend):
    """The adapters' async paths and the servers call one reranker from several threads (OpenVINO's
    inference request is not thread-safe: it raised "Infer Request is busy")."""
    from concurrent.futures import ThreadPoolExecutor

    if backend == "openvino":
        pytest.importorskip("openvino")
    reranker = CrossEncoderReranker(minilm_cross_encoder_path, backend=backend, max_length=128, device="cpu")
    queries = [f"pressure on a {shape} wing" for shape in ("slender", "swept", "delta", "thin", "yawed", "flat")]
    alone = [reranker.score(query, passages) for query in queries]
    with ThreadPoolExecutor(len(queries)) as pool:
        together = list(pool.map(reranker.score, queries, [passages] * len(queries)))
    assert together == alone


@pytest.mark.parametrize(
    "options,min_tau,max_share",
    [
        ({"backend": "onnx-int8"}, 0.9, 0.15),
        ({"backend": "torch-int8"}, 0.9, 0.15),
        ({"dtype": "bfloat16"}, 0.95, 0.05),
        ({"backend": "openvino", "dtype": "bfloat16"}, 0.95, 0.05),
    ],
)
def test_lossy_fast_paths_keep_the_ranking_close_and_every_document(
    minilm_cross_encoder_path, passages, reference, options, min_tau, max_share
):
    reranker = CrossEncoderReranker(minilm_cross_encoder_path, max_length=128, device="cpu", **options)
    ranked = reranker.rerank("pressure distribution on a slender wing", passages)
    assert sorted(d.text for d in ranked) == sorted(passages)
    scores = np.array(reranker.score("pressure distribution on a slender wing", passages))
    assert kendalltau(scores, reference).statistic > min_tau
    assert np.abs(scores - reference).max() < max_share * (reference.max() - reference.min())


def test_bfloat16_gets_its_own_copy_of_the_weights(minilm_cross_encoder_path):
    bfloat16 = CrossEncoderReranker(
        minilm_cross_encoder_path, dtype="bfloat16", max_length=128, device="cpu", backend="torch"
    )
    float32 = CrossEncoderReranker(minilm_cross_encoder_path, max_length=128, device="cpu", backend="torch")
    assert next(float32._model.model.parameters()).dtype == torch.float32
    assert next(bfloat16._model.model.parameters()).dtype == torch.bfloat16
    assert (float32.dtype, bfloat16.dtype) == ("float32", "bfloat16")  # what each says it runs


@pytest.mark.parametrize(
    ("backend", "dtype", "runs"),
    [("sentence-transformers", "bfloat16", "bfloat16"), ("torch", "float16", "float16"), ("onnx", None, "float32")],
)
def test_the_reranker_says_the_precision_its_backend_runs(tiny_cross_encoder_path, backend, dtype, runs):
    pytest.importorskip("onnxruntime")
    with warnings.catch_warnings():  # float16 on a CPU is slow, and said so: not what this test is about
        warnings.simplefilter("ignore", RuntimeWarning)
        reranker = CrossEncoderReranker(tiny_cross_encoder_path, backend=backend, dtype=dtype, device="cpu")
    assert reranker.dtype == runs


def test_int8_linear_matches_the_float_layer_and_leaves_the_model_alone(minilm_cross_encoder_path):
    from rag_rerank.inference.torch_int8 import Int8Linear, quantize_int8, smoothing_scale

    torch.manual_seed(0)
    linear = torch.nn.Linear(384, 1536)
    x = torch.randn(2, 7, 384)
    x[..., 5] *= 30  # an outlier channel, as MiniLM has
    expected = linear(x).detach()

    def error(smoothing):
        got = Int8Linear(linear, smoothing)(x)
        assert got.shape == expected.shape
        return float((got - expected).norm() / expected.norm())

    smoothed = error(smoothing_scale(x.abs().amax(dim=(0, 1)), linear.weight.detach().abs().amax(dim=0)))
    assert smoothed < 0.02 and smoothed < error(torch.ones(384)) / 2  # smoothing tames the outlier channel

    reranker = CrossEncoderReranker(minilm_cross_encoder_path, max_length=128, device="cpu", backend="torch")
    quantized = quantize_int8(reranker._model.model, reranker._model.tokenizer)
    assert sum(isinstance(m, Int8Linear) for m in quantized.modules()) == 6 * 6  # q, k, v, out, ffn in, ffn out
    assert not any(isinstance(m, Int8Linear) for m in reranker._model.model.modules())


@pytest.fixture(scope="module")
def compiled_int8(minilm_cross_encoder_path):
    if shutil.which("g++") is None:
        pytest.skip("torch.compile on CPU needs a C++ compiler (g++)")
    return CrossEncoderReranker(
        minilm_cross_encoder_path, backend="torch-int8", compile=True, max_length=128, device="cpu"
    )


def test_compiled_int8_keeps_the_ranking_close_for_every_batch_shape(compiled_int8, passages, reference):
    query = "pressure distribution on a slender wing"
    passages, reference = passages[:16], reference[:16]  # int8 is slow on CPUs without VNNI (CI may lack it)
    ranked = compiled_int8.rerank(query, passages)
    assert sorted(d.text for d in ranked) == sorted(passages)
    scores = np.array(compiled_int8.score(query, passages))
    spread = reference.max() - reference.min()
    assert kendalltau(scores, reference).statistic > 0.9  # as uncompiled int8 (0.97 and 0.96 measured)
    assert np.abs(scores - reference).max() < 0.15 * spread
    # one pair runs its own graph, an odd count a partial batch: both score as in the full run
    for subset in (slice(0, 1), slice(3, 8)):
        assert np.abs(np.array(compiled_int8.score(query, passages[subset])) - scores[subset]).max() < 0.05 * spread


def test_compile_without_a_cpp_compiler_says_what_to_install(tiny_cross_encoder_path, monkeypatch):
    import torch._inductor.config as inductor

    monkeypatch.setattr(inductor.cpp, "cxx", (None, "/nonexistent/g++"))
    monkeypatch.setattr(inductor, "fx_graph_cache", False)  # a cached build would not need the compiler
    with pytest.raises(RuntimeError, match="needs a C\\+\\+ compiler .* or use compile=False"):
        CrossEncoderReranker(tiny_cross_encoder_path, compile=True, device="cpu", backend="torch")


def test_compile_is_refused_where_it_does_not_apply(tiny_cross_encoder_path):
    with pytest.raises(ValueError, match="compile=True applies to backend='torch' or 'torch-int8'"):
        CrossEncoderReranker(tiny_cross_encoder_path, backend="onnx", compile=True)


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
    import warnings

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


def test_dtype_errors_name_the_fix(tiny_cross_encoder_path):
    with pytest.raises(ValueError, match="dtype must be one of"):
        CrossEncoderReranker(tiny_cross_encoder_path, dtype="int4", backend="torch")
    with pytest.raises(ValueError, match="applies to the torch and openvino backends"):
        CrossEncoderReranker(tiny_cross_encoder_path, dtype="bfloat16", backend="onnx-int8")


def test_onnx_int8_quantises_every_encoder_linear(minilm_cross_encoder_path):
    import onnx
    from onnx import numpy_helper

    reranker = CrossEncoderReranker(minilm_cross_encoder_path, backend="onnx-int8", max_length=128, device="cpu")
    graph = onnx.load(str(reranker._engine.session.path)).graph
    ops = [node.op_type for node in graph.node]
    assert ops.count("MatMulIntegerToFloat") == 6 * 6  # Q, K, V, output, FFN in, FFN out of 6 layers
    # Q, K and V share one quantised input, except in the last layer, whose Q reads the first token only
    assert ops.count("QuantizeLinear") == 6 * 4 + 1
    assert "SkipLayerNormalization" not in ops  # ONNX Runtime's fused kernel is the slower one (onnx.py)
    weights = {tensor.name for tensor in graph.initializer}
    assert not [node.name for node in graph.node if node.op_type == "MatMul" and node.input[1] in weights]
    int8 = [numpy_helper.to_array(t) for t in graph.initializer if t.name.endswith("_w8")]
    assert len(int8) == 36 and max(np.abs(w).max() for w in int8) <= 63  # 7 bits: no int16 overflow on AVX2
    # the separate-projections graph was only a step: the cache keeps the export and the int8 graph
    kept = {path.name for path in reranker._engine.session.path.parent.iterdir()} - {"model-fused.onnx"}
    assert {name for name in kept if name.endswith(".onnx")} == {"model.onnx", "model-int8.onnx"}


def test_a_failed_write_leaves_no_partial_file_and_a_full_disk_names_the_fix(tmp_path):
    import errno

    from rag_rerank.inference.cache import written_whole

    target = tmp_path / "model.onnx"
    with pytest.raises(OSError, match="RAG_RERANK_CACHE") as info, written_whole(target) as partial:
        partial.write_bytes(b"half a graph")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert info.value.errno == errno.ENOSPC and list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError), written_whole(target) as partial:  # any other error: raised as it is
        partial.write_bytes(b"half a graph")
        raise ValueError("bad graph")
    assert list(tmp_path.iterdir()) == []
    with written_whole(target) as whole:
        whole.write_bytes(b"a whole graph")
    assert list(tmp_path.iterdir()) == [target] and target.read_bytes() == b"a whole graph"


def test_per_token_int8_keeps_an_outlier_token_from_coarsening_the_others(tmp_path):
    """One scale per batch would round the ordinary tokens to ~0 next to a 1000x token."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from rag_rerank.inference.quantize import quantize_per_token

    rng = np.random.default_rng(0)
    weight = rng.normal(size=(64, 32)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="linear")],
        "one-linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, None, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, None, 32])],
        [numpy_helper.from_array(weight, "w")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "fp32.onnx"))
    quantize_per_token(tmp_path / "fp32.onnx", tmp_path / "int8.onnx")

    x = rng.normal(size=(1, 10, 64)).astype(np.float32)
    x[0, 3] *= 1000  # an outlier token, as BERT's [SEP] tends to be
    session = ort.InferenceSession(str(tmp_path / "int8.onnx"), providers=["CPUExecutionProvider"])
    y = session.run(None, {"x": x})[0][0]
    exact = x[0] @ weight
    error = np.linalg.norm(y - exact, axis=1) / np.linalg.norm(exact, axis=1)
    assert error.max() < 0.05, error  # every token, the ordinary ones included


@pytest.mark.parametrize("batch_size", [1, 3, None])
def test_batch_size_does_not_change_scores(tiny_cross_encoder_path, passages, batch_size):
    reference = CrossEncoderReranker(tiny_cross_encoder_path, batch_size=64, device="cpu", backend="torch").score(
        "wing", passages
    )
    reranker = CrossEncoderReranker(tiny_cross_encoder_path, batch_size=batch_size, device="cpu", backend="torch")
    assert reranker.batch_size == (batch_size or 8)  # automatic: small batches on CPU
    assert reranker.score("wing", passages) == pytest.approx(reference, abs=1e-5)


def test_bad_batch_size_is_named(tiny_cross_encoder_path):
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        CrossEncoderReranker(tiny_cross_encoder_path, batch_size=0, backend="torch")


def test_onnx_runs_one_pair_per_thread_by_default_with_the_same_scores(tiny_cross_encoder_path, passages):
    batched = CrossEncoderReranker(tiny_cross_encoder_path, backend="onnx", batch_size=8, device="cpu")
    default = CrossEncoderReranker(tiny_cross_encoder_path, backend="onnx", device="cpu")
    assert default.batch_size == 1
    assert default.score("wing", passages) == pytest.approx(batched.score("wing", passages), abs=1e-4)


def test_onnx_threads_return_each_batch_in_order(tiny_cross_encoder_path, passages):
    from rag_rerank.inference.cross_encoder.onnx import OnnxCrossEncoder
    from rag_rerank.models import load_cross_encoder

    model = load_cross_encoder(tiny_cross_encoder_path, device="cpu")
    batches = [dict(model.tokenizer("wing", passage, return_tensors="np")) for passage in passages]
    serial = OnnxCrossEncoder(model.model, quantize=False, threads=1).run_all(batches)
    parallel = OnnxCrossEncoder(model.model, quantize=False, threads=3).run_all(batches)
    assert len(parallel) == len(batches)
    np.testing.assert_allclose(np.concatenate(parallel), np.concatenate(serial), atol=1e-5)


def test_onnx_export_is_cached(minilm_cross_encoder_path, monkeypatch):
    """The second reranker reuses the files: exporting or fusing again would fail this test."""
    import threading

    from rag_rerank.inference import export as onnx_backend

    first = CrossEncoderReranker(minilm_cross_encoder_path, backend="onnx", device="cpu")
    written = {path: path.stat().st_mtime_ns for path in first._engine.session.path.parent.iterdir()}

    def must_not_run(*args, **kwargs):
        raise AssertionError("the cached ONNX files were not reused")

    monkeypatch.setattr(onnx_backend, "_export", must_not_run)
    monkeypatch.setattr(onnx_backend, "_fuse", must_not_run)
    second = CrossEncoderReranker(minilm_cross_encoder_path, backend="onnx", device="cpu")
    assert second._engine.session.path == first._engine.session.path
    assert {path: path.stat().st_mtime_ns for path in first._engine.session.path.parent.iterdir()} == written
    assert not [path for path in written if ".tmp" in path.name]  # every file was renamed into place
    with second:  # close() stops the worker threads
        second.score("wing", ["a wing in a slipstream", "heat transfer", "shells"])
    first.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("onnx")]


def test_the_model_cache_is_bounded(tiny_cross_encoder_path, minilm_cross_encoder_path):
    from rag_rerank import models

    for max_length in range(16, 16 + models.MODEL_CACHE_SIZE + 3):  # each a separate cached model
        models.load_cross_encoder(tiny_cross_encoder_path, device="cpu", max_length=max_length)
    assert len(models._cache) == models.MODEL_CACHE_SIZE


def test_score_cache_returns_the_same_scores_and_stays_bounded(tiny_cross_encoder_path, passages):
    plain = CrossEncoderReranker(tiny_cross_encoder_path, device="cpu", backend="torch")
    cached = CrossEncoderReranker(tiny_cross_encoder_path, device="cpu", cache_size=25, backend="torch")
    expected = plain.score("wing", passages[:20])
    assert cached.score("wing", passages[:20]) == pytest.approx(expected, abs=1e-6)
    assert cached.score("wing", passages[:20]) == pytest.approx(expected, abs=1e-6)  # from the cache
    assert cached.score("wing", passages[:10] + passages[:10]) == pytest.approx(expected[:10] * 2, abs=1e-6)
    cached.score("another query", passages[:20])
    assert len(cached._cache) == 25


def test_score_cache_is_safe_under_threads(tiny_cross_encoder_path, passages):
    """The adapters' async paths and the server score from worker threads; a small cache under
    four threads used to raise KeyError (an entry evicted between insert and read)."""
    from concurrent.futures import ThreadPoolExecutor

    plain = CrossEncoderReranker(tiny_cross_encoder_path, device="cpu", backend="torch")
    cached = CrossEncoderReranker(tiny_cross_encoder_path, device="cpu", cache_size=8, backend="torch")
    queries = ["wing", "flutter", "heat", "shell"]
    expected = {q: plain.score(q, passages[:12]) for q in queries}
    jobs = [(queries[i % 4], [(i * 5 + j) % 12 for j in range(6)]) for i in range(80)]

    def run(job):
        query, picks = job
        return cached.score(query, [passages[i] for i in picks]), [expected[query][i] for i in picks]

    with ThreadPoolExecutor(4) as pool:
        for got, want in pool.map(run, jobs):
            assert got == pytest.approx(want, abs=1e-6)
    assert len(cached._cache) <= 8


def test_unknown_backend_is_named(tiny_cross_encoder_path):
    with pytest.raises(ValueError, match="backend must be one of"):
        CrossEncoderReranker(tiny_cross_encoder_path, backend="tensorrt")


def _a_cpu_where(monkeypatch, bfloat16: float, installed: set[str]) -> None:
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

    _a_cpu_where(monkeypatch, bfloat16, installed)
    choice = choose("cpu")
    assert (choice.backend, choice.dtype) == expected


def test_auto_checks_bfloat16_against_float32_before_running_it(tiny_cross_encoder_path, monkeypatch, caplog):
    """bfloat16 is lossy too: auto keeps it only where it ranks the calibration pairs as float32 does,
    checked once per CPU and model. The tiny random model's logits are all but equal, so bfloat16's
    rounding reorders them: float32 runs, and says why; a cached verdict that agrees keeps bfloat16."""
    import json

    from rag_rerank.inference.calibration import verdict_path

    _a_cpu_where(monkeypatch, 3.3, {"onnxruntime"})
    with caplog.at_level("WARNING", logger="rag_rerank"):
        checked = CrossEncoderReranker(tiny_cross_encoder_path, device="cpu")  # backend="auto" is the default
    assert (checked.backend, checked.dtype) == ("torch", "float32")
    assert "in bfloat16 ranks the calibration pairs differently" in caplog.text
    bfloat16 = CrossEncoderReranker(tiny_cross_encoder_path, device="cpu", dtype="bfloat16")  # a dtype means torch
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

    _a_cpu_where(monkeypatch, 0.02, {"onnxruntime"})
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
    from rag_rerank.inference.auto import INT8_MUST_BE_FASTER
    from rag_rerank.models import SHIPPED_CROSS_ENCODER

    def auto() -> CrossEncoderReranker:
        return CrossEncoderReranker(str(SHIPPED_CROSS_ENCODER), device="cpu", max_length=128)

    _a_cpu_where(monkeypatch, 3.3, {"onnxruntime", "openvino"})
    with caplog.at_level("INFO", logger="rag_rerank"):
        measured = auto()
    graph = CrossEncoderReranker(str(SHIPPED_CROSS_ENCODER), device="cpu", backend="onnx-int8")._engine.session.path
    verdict = graph.with_name(f"{graph.name}.speedup-openvino-bfloat16-{cpu.identity()}.json")  # this CPU's
    saved = json.loads(verdict.read_text())
    faster = saved["speedup"] >= INT8_MUST_BE_FASTER
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
    _a_cpu_where(monkeypatch, bfloat16, {"onnxruntime", "openvino"})
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


def test_a_measurement_that_cannot_be_saved_is_still_returned(tmp_path):
    from rag_rerank.inference.calibration import _measured_once

    (tmp_path / "a-file").write_text("")
    verdict = tmp_path / "a-file" / "verdict.json"
    assert _measured_once(verdict, "speedup", [("q", "p")], lambda: 1.5) == 1.5


def test_processes_starting_together_export_once_and_wait_for_a_measurement(
    tiny_cross_encoder_path, tmp_path, monkeypatch
):
    """Server workers or Ray replicas starting at once: one exports while the others wait for it, and
    a measurement in progress elsewhere is waited for and read, not made again beside it (which
    would also disturb its timing). Threads stand in for the processes: the lock is a file lock."""
    import json
    import threading

    from filelock import FileLock

    from rag_rerank.inference import export as onnx_backend
    from rag_rerank.inference.calibration import _measured_once
    from rag_rerank.models import load_cross_encoder

    monkeypatch.setenv("RAG_RERANK_CACHE", str(tmp_path / "cache"))
    model = load_cross_encoder(tiny_cross_encoder_path, device="cpu").model
    exports = []
    real_export = onnx_backend._export
    monkeypatch.setattr(onnx_backend, "_export", lambda *a: exports.append(a) or real_export(*a))
    paths = []
    workers = [threading.Thread(target=lambda: paths.append(onnx_backend.exported_model(model))) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(exports) == 1 and len(set(paths)) == 1 and paths[0].exists()

    verdict, pairs = tmp_path / "verdict.json", [("q", "p")]
    _measured_once(tmp_path / "format.json", "speedup", pairs, lambda: 1.5)  # what a finished one writes
    elsewhere = FileLock(f"{verdict}.lock")
    elsewhere.acquire()  # another process is measuring
    read = []
    waiting = threading.Thread(
        target=lambda: read.append(_measured_once(verdict, "speedup", pairs, lambda: pytest.fail("measured twice")))
    )
    waiting.start()
    waiting.join(0.5)
    assert waiting.is_alive() and not read  # it waits
    verdict.write_text((tmp_path / "format.json").read_text())
    elsewhere.release()
    waiting.join()
    assert read == [1.5] and json.loads(verdict.read_text())["speedup"] == 1.5


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
    _a_cpu_where(monkeypatch, 0.02, {"onnxruntime"})
    with caplog.at_level("WARNING", logger="rag_rerank"):
        reranker = CrossEncoderReranker(str(tmp_path / "outliers"), device="cpu", max_length=128)
    assert "ranks the calibration pairs differently" in caplog.text
    assert (reranker.backend, reranker.dtype) == ("onnx", "float32")
    exact = CrossEncoderReranker(str(tmp_path / "outliers"), device="cpu", max_length=128, backend="onnx")
    assert reranker.score("wing", ["a wing", "a slipstream"]) == exact.score("wing", ["a wing", "a slipstream"])
    forced = CrossEncoderReranker(str(tmp_path / "outliers"), device="cpu", max_length=128, backend="onnx-int8")
    assert forced.backend == "onnx-int8"  # asked for by name: no check, int8 it is


def test_each_openvino_precision_compiles_into_a_cache_of_its_own(
    minilm_cross_encoder_path, passages, tmp_path, monkeypatch
):
    """OpenVINO's cache key leaves the precision out: with one cache folder, a bfloat16 compile was
    served the float32 blob of the same graph (NaN scores or a corrupted heap on AMX). Float32, then
    bfloat16, then float32 again under one cache: each scores as torch does, and each configuration
    has a blob of its own (which catches a shared blob on any CPU, AMX or not)."""
    pytest.importorskip("openvino")
    query = "pressure distribution on a slender wing"
    monkeypatch.setenv("RAG_RERANK_CACHE", str(tmp_path))
    exact = np.array(
        CrossEncoderReranker(minilm_cross_encoder_path, backend="torch", max_length=128).score(query, passages)
    )
    compiled = set()
    for dtype in ("float32", "bfloat16", "float32"):
        reranker = CrossEncoderReranker(minilm_cross_encoder_path, backend="openvino", dtype=dtype, max_length=128)
        if reranker.dtype != dtype:
            pytest.skip("this CPU has no bfloat16 kernels (AVX-512 BF16 or AMX): OpenVINO runs float32 only")
        scores = np.array(reranker.score(query, passages))
        assert np.isfinite(scores).all()
        if dtype == "float32":
            assert np.abs(scores - exact).max() < 1e-3
        assert kendalltau(scores, exact).statistic > 0.95
        compiled.add(dtype)
        blobs = list((tmp_path / "openvino").rglob("*.blob"))
        assert len(blobs) == len(compiled)  # one blob per configuration, and the second float32 compile read its own
        assert sorted(blob.parent.name.split("-")[0] for blob in blobs) == sorted(compiled)


def test_the_cache_identity_of_a_model_covers_every_weight(tiny_cross_encoder_path):
    """Two models that differ in one weight element must not share exported graphs."""
    from rag_rerank.inference.export import fingerprint
    from rag_rerank.models import load_cross_encoder

    model = load_cross_encoder(tiny_cross_encoder_path, device="cpu").model
    before = fingerprint(model)
    weight = model.bert.encoder.layer[1].output.dense.weight
    with torch.no_grad():
        weight.view(-1)[1] += 1e-3  # not an element a sample of every n-th would read
        changed = fingerprint(model)
        weight.view(-1)[1] -= 1e-3
    assert changed != before
    assert fingerprint(model) == before


def test_nan_logits_never_reach_a_user_an_explicit_backend_says_which(tiny_cross_encoder_path, nan_backend):
    from rag_rerank.inference.backend import NonFiniteOutput

    nan_backend("onnx")
    reranker = CrossEncoderReranker(tiny_cross_encoder_path, device="cpu", backend="onnx", cache_size=8)
    expected = f"{tiny_cross_encoder_path} gave NaN or infinite logits for 1 of 3 inputs on backend='onnx' in float32"
    for call in (
        lambda: reranker.rerank("wing", ["a", "b", "c"]),
        lambda: reranker.score("wing", ["a", "b", "c"]),
        lambda: reranker.score_pairs([("wing", "a"), ("wing", "b"), ("flap", "c")], logits=True),
    ):
        with pytest.raises(NonFiniteOutput, match=expected.replace("(", r"\(").replace(")", r"\)")):
            call()
    assert reranker._cache == {}  # nothing non-finite was kept for later either


def test_auto_checks_its_lossy_pick_and_falls_back_to_the_exact_path_on_nan(
    tiny_cross_encoder_path, monkeypatch, nan_backend, caplog
):
    """auto picked OpenVINO bfloat16 (a CPU with bfloat16 kernels): its calibration check sees NaN and
    keeps float32 on OpenVINO; that gives NaN too at run time, so torch float32 runs from then on."""
    nan_backend("openvino")
    _a_cpu_where(monkeypatch, 3.3, {"openvino"})
    exact = CrossEncoderReranker(tiny_cross_encoder_path, device="cpu", backend="torch")
    with caplog.at_level("WARNING", logger="rag_rerank"):
        reranker = CrossEncoderReranker(tiny_cross_encoder_path, device="cpu")
        assert (reranker.backend, reranker.dtype) == ("openvino", "float32")
        assert "gives non-finite scores" in caplog.text
        ranked = reranker.rerank("wing", ["a wing", "a flap", "a slat"])
    assert "runs torch in float32 from now on" in caplog.text
    assert (reranker.backend, reranker.dtype) == ("torch", "float32")
    assert [doc.score for doc in ranked] == sorted(exact.score("wing", ["a wing", "a flap", "a slat"]), reverse=True)


def test_nan_vectors_never_reach_the_store(monkeypatch, caplog):
    """The bi-encoder's OpenVINO path giving NaN: refused by name when asked for; under auto, torch float32."""
    pytest.importorskip("openvino")
    from rag_rerank import BiEncoder
    from rag_rerank.inference.backend import NonFiniteOutput
    from rag_rerank.retrieval import embedding

    real = embedding.OpenVinoEncoder.embed
    monkeypatch.setattr(embedding.OpenVinoEncoder, "embed", lambda self, texts, kind: real(self, texts, kind) * np.nan)
    asked = BiEncoder(backend="openvino", dtype="float32")
    with pytest.raises(NonFiniteOutput, match="NaN or infinite vectors for 2 of 2 inputs on backend='openvino'"):
        asked.embed_documents(["a wing", "a flap"])
    _a_cpu_where(monkeypatch, 0.5, {"openvino"})  # auto: OpenVINO float32
    auto = BiEncoder()
    with caplog.at_level("WARNING", logger="rag_rerank"):
        vectors = auto.embed_documents(["a wing", "a flap"])
    assert (auto.backend, auto.dtype) == ("torch", "float32") and "from now on" in caplog.text
    assert np.allclose(vectors, BiEncoder(backend="torch").embed_documents(["a wing", "a flap"]), atol=1e-5)
