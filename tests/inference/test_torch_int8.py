"""The torch backend's int8 Linear layers, compiled or not."""

import shutil

import numpy as np
import pytest
import torch
from scipy.stats import kendalltau

from rag_rerank import CrossEncoderReranker

pytest.importorskip("onnxruntime")


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
