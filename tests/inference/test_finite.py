"""No NaN or infinite score or vector ever reaches a user: an explicit backend says which, auto
falls back to the exact path."""

import numpy as np
import pytest
from cpu_helpers import a_cpu_where

from rag_rerank import CrossEncoderReranker

pytest.importorskip("onnxruntime")


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
    tiny_cross_encoder_path, monkeypatch, nan_backend, caplog, tmp_path
):
    """auto picked OpenVINO bfloat16 (a CPU with bfloat16 kernels): its calibration check sees NaN and
    keeps float32 on OpenVINO; that gives NaN too at run time, so torch float32 runs from then on.
    (A cache of its own: the NaN verdict must not reach the session's other tests.)"""
    monkeypatch.setenv("RAG_RERANK_CACHE", str(tmp_path))
    nan_backend("openvino")
    a_cpu_where(monkeypatch, 3.3, {"openvino"})
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
    a_cpu_where(monkeypatch, 0.5, {"openvino"})  # auto: OpenVINO float32
    auto = BiEncoder()
    with caplog.at_level("WARNING", logger="rag_rerank"):
        vectors = auto.embed_documents(["a wing", "a flap"])
    assert (auto.backend, auto.dtype) == ("torch", "float32") and "from now on" in caplog.text
    assert np.allclose(vectors, BiEncoder(backend="torch").embed_documents(["a wing", "a flap"]), atol=1e-5)
