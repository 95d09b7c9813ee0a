"""ONNX Runtime's graphs: the export, the per-token int8 rewrite, and the threads that run them."""

import numpy as np
import pytest

from rag_rerank import CrossEncoderReranker

pytest.importorskip("onnxruntime")


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

    from rag_rerank.inference import export, optimize

    first = CrossEncoderReranker(minilm_cross_encoder_path, backend="onnx", device="cpu")
    written = {path: path.stat().st_mtime_ns for path in first._engine.session.path.parent.iterdir()}

    def must_not_run(*args, **kwargs):
        raise AssertionError("the cached ONNX files were not reused")

    monkeypatch.setattr(export, "_export", must_not_run)
    monkeypatch.setattr(optimize, "_fuse", must_not_run)
    second = CrossEncoderReranker(minilm_cross_encoder_path, backend="onnx", device="cpu")
    assert second._engine.session.path == first._engine.session.path
    assert {path: path.stat().st_mtime_ns for path in first._engine.session.path.parent.iterdir()} == written
    assert not [path for path in written if ".tmp" in path.name]  # every file was renamed into place
    with second:  # close() stops the worker threads
        second.score("wing", ["a wing in a slipstream", "heat transfer", "shells"])
    first.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("onnx")]
