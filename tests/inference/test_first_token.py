"""The last layer computed for the first token only gives the full network's logits, or is not used."""

import pytest
import torch
from transformers import AutoModelForSequenceClassification, BertForSequenceClassification, BertForTokenClassification

from rag_rerank import load_cross_encoder, resolve_model
from rag_rerank.inference.first_token import FirstTokenLayer, first_token_network

SHIPPED = "models/rag-rerank-minilm-l6"


@pytest.fixture(scope="module")
def padded_pairs(cranfield):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(SHIPPED)
    texts = [doc.text for doc in cranfield.corpus[:12] if doc.text.strip()]
    queries = ["pressure distribution on a slender wing"] * len(texts)
    return tokenizer(queries, texts, padding=True, truncation=True, max_length=256, return_tensors="pt")


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_the_shipped_model_gives_the_same_logits_with_less_work(padded_pairs, attention):
    network = AutoModelForSequenceClassification.from_pretrained(SHIPPED, attn_implementation=attention).eval()
    assert padded_pairs["attention_mask"].min() == 0  # the batch holds padding
    pruned = first_token_network(network)
    assert isinstance(pruned.bert.encoder.layer[-1], FirstTokenLayer)
    with torch.inference_mode():
        full, fewer = network(**padded_pairs).logits, pruned(**padded_pairs).logits
        hidden = network.bert(**padded_pairs).last_hidden_state
    assert torch.allclose(full, fewer, atol=1e-5)
    # the user's model is left whole: every token of its last layer, its own layer objects
    assert hidden.shape[1] == padded_pairs["input_ids"].shape[1]
    assert not isinstance(network.bert.encoder.layer[-1], FirstTokenLayer)
    assert pruned.bert.encoder.layer[-1].layer is network.bert.encoder.layer[-1]  # weights shared, not copied


class MeanPooledBert(BertForSequenceClassification):
    """A head that reads every token (as some users' cross-encoders do): pruning would change it."""

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, **kwargs):
        hidden = self.bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state
        mask = attention_mask.unsqueeze(-1).float()
        logits = self.classifier((hidden * mask).sum(1) / mask.sum(1))
        return type("Output", (), {"logits": logits})()


@pytest.mark.parametrize("model_class", [MeanPooledBert, BertForTokenClassification])
def test_a_head_that_reads_more_than_the_first_token_keeps_the_full_network(model_class, caplog):
    network = model_class.from_pretrained(resolve_model("sentence-transformers/all-MiniLM-L6-v2"), num_labels=1)
    with caplog.at_level("INFO", logger="rag_rerank.inference.first_token"):
        assert first_token_network(network.eval()) is network
    assert "reads more than the first token" in caplog.text


def test_the_torch_backend_runs_the_first_token_network_with_the_same_scores(cranfield):
    from rag_rerank.inference.backend import load_backend

    texts = [doc.text for doc in cranfield.corpus[:12] if doc.text.strip()]
    pairs = [("pressure distribution on a slender wing", text) for text in texts]
    model = load_cross_encoder(SHIPPED, device="cpu")
    backend = load_backend("torch", model, batch_size=None, compile=False)
    assert isinstance(backend.network.bert.encoder.layer[-1], FirstTokenLayer)
    expected = load_backend("sentence-transformers", model, batch_size=None, compile=False).logits(pairs)
    assert abs(backend.logits(pairs) - expected).max() < 1e-5
