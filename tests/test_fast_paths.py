"""Every scoring backend agrees with CrossEncoder.predict and returns every document."""

import numpy as np
import pytest
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


@pytest.mark.parametrize("backend,tolerance", [("torch", 1e-4), ("onnx", 1e-3)])
def test_exact_backends_match_the_baseline(minilm_cross_encoder_path, passages, reference, backend, tolerance):
    reranker = CrossEncoderReranker(
        minilm_cross_encoder_path, backend=backend, max_length=128, batch_size=8, device="cpu"
    )
    scores = np.array(reranker.score("pressure distribution on a slender wing", passages))
    assert np.abs(scores - reference).max() < tolerance
    assert kendalltau(scores, reference).statistic > 0.99


def test_int8_keeps_the_ranking_close_and_every_document(minilm_cross_encoder_path, passages, reference):
    reranker = CrossEncoderReranker(minilm_cross_encoder_path, backend="onnx-int8", max_length=128, device="cpu")
    ranked = reranker.rerank("pressure distribution on a slender wing", passages)
    assert sorted(d.text for d in ranked) == sorted(passages)
    scores = np.array(reranker.score("pressure distribution on a slender wing", passages))
    assert kendalltau(scores, reference).statistic > 0.8
    assert np.abs(scores - reference).max() < 0.25 * (reference.max() - reference.min())


def test_onnx_export_is_cached(minilm_cross_encoder_path):
    first = CrossEncoderReranker(minilm_cross_encoder_path, backend="onnx", device="cpu")
    second = CrossEncoderReranker(minilm_cross_encoder_path, backend="onnx", device="cpu")
    assert first._onnx.path == second._onnx.path and first._onnx.path.exists()


def test_score_cache_returns_the_same_scores_and_stays_bounded(tiny_cross_encoder_path, passages):
    plain = CrossEncoderReranker(tiny_cross_encoder_path, device="cpu")
    cached = CrossEncoderReranker(tiny_cross_encoder_path, device="cpu", cache_size=25)
    expected = plain.score("wing", passages[:20])
    assert cached.score("wing", passages[:20]) == pytest.approx(expected, abs=1e-6)
    assert cached.score("wing", passages[:20]) == pytest.approx(expected, abs=1e-6)  # from the cache
    assert cached.score("wing", passages[:10] + passages[:10]) == pytest.approx(expected[:10] * 2, abs=1e-6)
    cached.score("another query", passages[:20])
    assert len(cached._cache) == 25


def test_unknown_backend_is_named(tiny_cross_encoder_path):
    with pytest.raises(ValueError, match="backend must be one of"):
        CrossEncoderReranker(tiny_cross_encoder_path, backend="tensorrt")
