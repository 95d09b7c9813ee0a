"""Every scoring backend agrees with CrossEncoder.predict and returns every document; settings that
cannot work are refused by name."""

import warnings

import numpy as np
import pytest
import torch
from scipy.stats import kendalltau

from rag_rerank import CrossEncoderReranker

pytest.importorskip("onnxruntime")


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


def test_dtype_errors_name_the_fix(tiny_cross_encoder_path):
    with pytest.raises(ValueError, match="dtype must be one of"):
        CrossEncoderReranker(tiny_cross_encoder_path, dtype="int4", backend="torch")
    with pytest.raises(ValueError, match="applies to the torch and openvino backends"):
        CrossEncoderReranker(tiny_cross_encoder_path, dtype="bfloat16", backend="onnx-int8")


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


def test_unknown_backend_is_named(tiny_cross_encoder_path):
    with pytest.raises(ValueError, match="backend must be one of"):
        CrossEncoderReranker(tiny_cross_encoder_path, backend="tensorrt")


def test_compile_is_refused_where_it_does_not_apply(tiny_cross_encoder_path):
    with pytest.raises(ValueError, match="compile=True applies to backend='torch' or 'torch-int8'"):
        CrossEncoderReranker(tiny_cross_encoder_path, backend="onnx", compile=True)
