"""Models other than BERT run on every backend: XLM-RoBERTa (the bge rerankers, multilingual bi-encoders:
one token type, and a tokenizer that gives none) and DistilBERT (no token types at all) export to ONNX and
OpenVINO with the torch scores, and a model that cannot be exported still runs under the default backend."""

import logging

import numpy as np
import pytest

from rag_rerank import BiEncoder, CrossEncoderReranker, resolve_model
from rag_rerank.models import DEFAULT_BI_ENCODER

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

SMALL = {"num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


def bert_tokenizer(token_types: bool):
    from transformers import AutoTokenizer

    names = ["input_ids", "token_type_ids", "attention_mask"] if token_types else ["input_ids", "attention_mask"]
    return AutoTokenizer.from_pretrained(resolve_model(DEFAULT_BI_ENCODER), model_input_names=names)


def xlm_roberta(vocab_size: int, pad_token_id: int):
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    config = XLMRobertaConfig(
        vocab_size=vocab_size,
        pad_token_id=pad_token_id,  # its positions count from the padding id, as its tokenizer pads
        hidden_size=32,
        max_position_embeddings=514,
        type_vocab_size=1,
        num_labels=1,
        **SMALL,
    )
    return XLMRobertaForSequenceClassification(config)


def distilbert(vocab_size: int, pad_token_id: int = 0):
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    config = DistilBertConfig(vocab_size=vocab_size, dim=32, n_layers=2, n_heads=2, hidden_dim=64, num_labels=1)
    return DistilBertForSequenceClassification(config)


@pytest.fixture(scope="module", params=["xlm-roberta", "distilbert"])
def other_cross_encoder(request, tmp_path_factory) -> str:
    """A tiny random cross-encoder of that architecture, its tokenizer giving no token types."""
    import torch

    torch.manual_seed(0)
    tokenizer = bert_tokenizer(token_types=False)
    build = xlm_roberta if request.param == "xlm-roberta" else distilbert
    folder = tmp_path_factory.mktemp(request.param)
    build(tokenizer.vocab_size, tokenizer.pad_token_id).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.mark.parametrize("backend", ["onnx", "openvino", "onnx-int8"])
def test_other_architectures_score_as_torch_does_on_every_backend(other_cross_encoder, cranfield, backend):
    passages = [doc.text for doc in cranfield.corpus[:20] if doc.text.strip()]
    query = "pressure distribution on a slender wing"

    def scores(name: str) -> np.ndarray:
        reranker = CrossEncoderReranker(other_cross_encoder, backend=name, device="cpu", allow_untrained_head=True)
        return np.array(reranker.score(query, passages))

    torch_scores, fast = scores("torch"), scores(backend)
    assert fast.shape == torch_scores.shape
    tolerance = 1e-2 if backend == "onnx-int8" else 1e-4  # random logits sit close together: compare values
    assert np.abs(fast - torch_scores).max() < tolerance * (1 + np.abs(torch_scores).max())
    assert np.array_equal(scores("torch"), torch_scores)  # the export left the shared model as it was (eval)


def test_auto_runs_torch_where_the_model_cannot_be_exported(tiny_cross_encoder_path, monkeypatch, caplog, tmp_path):
    """The default must run wherever torch does: an export that fails (an architecture the exporter does
    not know) leaves auto on torch with a warning naming the error; the named backend raises it."""
    from rag_rerank.inference import cpu
    from rag_rerank.inference import export as onnx

    def unexportable(*args, **kwargs):
        raise RuntimeError("Exporting the operator 'aten::weird_op' to ONNX opset version 17 is not supported")

    monkeypatch.setattr(onnx, "_export", unexportable)
    monkeypatch.setattr(cpu, "matmul_speedup", lambda kind: 0.5)  # auto's choice here: onnx-int8
    monkeypatch.setenv("RAG_RERANK_CACHE", str(tmp_path))  # nothing exported yet
    with caplog.at_level(logging.WARNING, logger="rag_rerank"):
        reranker = CrossEncoderReranker(tiny_cross_encoder_path, device="cpu", allow_untrained_head=True)
    assert (reranker.backend, reranker.dtype) == ("torch", "float32")
    assert "aten::weird_op" in caplog.text and "backend='onnx-int8' shows the whole error" in caplog.text
    assert len(reranker.score("a wing", ["a flap", "a wing"])) == 2
    with pytest.raises(RuntimeError, match="weird_op"):
        CrossEncoderReranker(tiny_cross_encoder_path, device="cpu", backend="onnx", allow_untrained_head=True)


@pytest.mark.parametrize("architecture", ["xlm-roberta", "distilbert"])
def test_other_bi_encoders_run_in_openvino_with_the_torch_vectors(tmp_path, monkeypatch, architecture):
    """Multilingual bi-encoders (XLM-RoBERTa: paraphrase-multilingual-*, multilingual-e5) and DistilBERT
    ones (msmarco-distilbert-*) read no token types: the OpenVINO export must not pass them, and must
    leave the shared model in eval mode (no dropout for torch after it)."""
    import torch
    from sentence_transformers import SentenceTransformer, models

    torch.manual_seed(0)
    tokenizer = bert_tokenizer(token_types=False)
    network = (xlm_roberta if architecture == "xlm-roberta" else distilbert)(
        tokenizer.vocab_size, tokenizer.pad_token_id
    )
    network.base_model.save_pretrained(tmp_path / "transformer")
    tokenizer.save_pretrained(tmp_path / "transformer")
    transformer = models.Transformer(str(tmp_path / "transformer"))
    pooling = models.Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
    SentenceTransformer(modules=[transformer, pooling]).save(str(tmp_path / "bi-encoder"))
    monkeypatch.setenv("RAG_RERANK_CACHE", str(tmp_path / "cache"))  # the export happens here
    texts = ["shock waves on a swept wing", "heat transfer in a laminar boundary layer", "a flap"]
    fast = BiEncoder(str(tmp_path / "bi-encoder"), backend="openvino", dtype="float32", device="cpu")
    exact = BiEncoder(str(tmp_path / "bi-encoder"), backend="torch", device="cpu")  # the same loaded model
    assert np.allclose(fast.embed_documents(texts), exact.embed_documents(texts), atol=1e-4)
    assert np.array_equal(exact.embed_documents(texts), exact.embed_documents(texts))
