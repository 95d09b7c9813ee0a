"""The reranker's caches: loaded models (bounded) and (query, passage) scores (bounded, thread-safe)."""

import pytest

from rag_rerank import CrossEncoderReranker

pytest.importorskip("onnxruntime")


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
