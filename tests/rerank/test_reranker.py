import math

import pytest
from sentence_transformers import CrossEncoder

from rag_rerank import CrossEncoderReranker, Document

PASSAGES = [
    "the boundary layer on a flat plate becomes turbulent",
    "heat transfer in hypersonic flow",
    "an experimental study of a wing in a propeller slipstream",
    "buckling of thin cylindrical shells under axial compression",
    "flutter of panels at supersonic speed",
]


def test_scores_are_the_models_logits_in_input_order(tiny_reranker, tiny_cross_encoder_path):
    import torch

    model = CrossEncoder(tiny_cross_encoder_path, device="cpu")
    expected = model.predict([("wing slipstream", p) for p in PASSAGES], activation_fn=torch.nn.Identity())
    assert tiny_reranker.score("wing slipstream", PASSAGES) == pytest.approx(list(expected), abs=1e-5)


def test_rerank_returns_every_document_once_sorted_with_metadata(tiny_reranker):
    docs = [Document(text, metadata={"n": i}, id=f"d{i}") for i, text in enumerate(PASSAGES)]
    ranked = tiny_reranker.rerank("wing slipstream", docs)
    assert sorted(doc.id for doc in ranked) == sorted(doc.id for doc in docs)
    assert [doc.score for doc in ranked] == sorted((doc.score for doc in ranked), reverse=True)
    assert all(doc.metadata == {"n": int(doc.id[1:])} for doc in ranked)
    assert all(doc.score is None for doc in docs), "inputs are not modified"


def test_duplicate_passages_are_both_kept(tiny_reranker):
    assert len(tiny_reranker.rerank("q", ["same", "same", "other"])) == 3


def test_top_n_and_threshold(tiny_reranker):
    everything = tiny_reranker.rerank("wing", PASSAGES)
    assert [d.text for d in tiny_reranker.rerank("wing", PASSAGES, top_n=2)] == [d.text for d in everything[:2]]
    cut = everything[2].score
    assert [d.text for d in tiny_reranker.rerank("wing", PASSAGES, threshold=cut)] == [d.text for d in everything[:3]]


def test_normalize_applies_sigmoid(tiny_cross_encoder_path, tiny_reranker):
    normalized = CrossEncoderReranker(tiny_cross_encoder_path, device="cpu", normalize=True, backend="torch")
    raw = tiny_reranker.score("wing", PASSAGES)
    assert normalized.score("wing", PASSAGES) == pytest.approx([1 / (1 + math.exp(-x)) for x in raw], abs=1e-6)


def test_long_passages_are_truncated_not_rejected(tiny_cross_encoder_path):
    reranker = CrossEncoderReranker(tiny_cross_encoder_path, device="cpu", max_length=32, backend="torch")
    assert len(reranker.score("wing", ["word " * 2000])) == 1


def test_empty_candidates_give_empty_result(tiny_reranker):
    assert tiny_reranker.rerank("anything", []) == []


@pytest.mark.parametrize(
    "query,docs,error,match",
    [
        ("", ["text"], ValueError, "query is empty"),
        (None, ["text"], TypeError, "query is a NoneType"),
        ("q", ["ok", "  "], ValueError, "passage 1 is empty"),
        ("q", ["ok", 42], TypeError, "document 1 is a int"),
        ("q", ["ok"], ValueError, "top_n must be"),
        ("q", "one passage", TypeError, "documents must be a list, got one str"),  # not 11 one-letter passages
    ],
)
def test_bad_input_is_named(tiny_reranker, query, docs, error, match):
    with pytest.raises(error, match=match):
        tiny_reranker.rerank(query, docs, top_n=-1 if match.startswith("top_n") else None)


def test_score_refuses_one_string_for_a_list(tiny_reranker):
    with pytest.raises(TypeError, match="passages must be a list, got one str"):
        tiny_reranker.score("q", "one passage")


def test_first_stage_weight_fuses_the_input_order(tiny_cross_encoder_path):
    import math

    from rag_rerank import CrossEncoderReranker

    docs = ["wing slipstream lift", "shell buckling", "heat in slabs", "creep of metals", "panel flutter"]
    plain = CrossEncoderReranker(tiny_cross_encoder_path, device="cpu", backend="torch")
    fused = CrossEncoderReranker(tiny_cross_encoder_path, device="cpu", first_stage_weight=2.0, backend="torch")
    logits = plain.score("wing", docs)
    expected = sorted(range(5), key=lambda i: -(logits[i] - 2.0 * math.log(i + 1)))
    ranked = fused.rerank("wing", docs)
    assert [d.text for d in ranked] == [docs[i] for i in expected]
    assert [d.score for d in ranked] == pytest.approx([logits[i] - 2.0 * math.log(i + 1) for i in expected], abs=1e-5)
    assert fused.score("wing", docs) == pytest.approx(logits)  # score() is never fused
    assert [
        d.text
        for d in CrossEncoderReranker(tiny_cross_encoder_path, first_stage_weight=1e6, backend="torch").rerank(
            "q", docs
        )
    ] == docs
    with pytest.raises(ValueError, match="first_stage_weight"):
        CrossEncoderReranker(tiny_cross_encoder_path, first_stage_weight=-1, backend="torch")


def test_pairs_are_encoded_as_the_tokenizer_would_with_each_query_tokenised_once(cranfield, tiny_reranker):
    from rag_rerank.inference.tokens import encode_pairs, pair_lengths

    tokenizer = tiny_reranker._model.tokenizer
    passages = [doc.text for doc in cranfield.corpus[:30]]
    queries = [cranfield.queries["1"], " ".join(passages[:3]), "wing"]  # short, longer than the model, one word
    for max_length in (32, 128, 512):
        pairs = [(q, p) for q in queries for p in passages]
        want = tokenizer([q for q, _ in pairs], [p for _, p in pairs], truncation=True, max_length=max_length)
        got = encode_pairs(tokenizer, pairs, max_length)
        assert {key: got[key] for key in got} == {key: want[key] for key in got}, max_length
    whole = tokenizer([q for q, _ in pairs], [p for _, p in pairs], truncation=False, return_length=True)["length"]
    assert pair_lengths(tokenizer, pairs) == list(whole)  # what the truncation flags are computed from

    seen: list[str] = []

    class Counting:  # the same tokenizer, recording what it is asked to tokenise
        def __getattr__(self, name):
            return getattr(tokenizer, name)

        def __call__(self, texts, *args, **kwargs):
            seen.extend(texts)
            return tokenizer(texts, *args, **kwargs)

    encode_pairs(Counting(), [(queries[0], p) for p in passages], 128)
    assert seen.count(queries[0]) == 1 and len(seen) == 1 + len(passages)


def test_batches_are_sorted_by_token_count_so_each_holds_little_padding(tiny_reranker):
    import numpy as np

    from rag_rerank.inference.tokens import padded_batches

    tokenizer = tiny_reranker._model.tokenizer
    # by characters the order would be wrong: a long word is many word pieces, spaced letters are few
    texts = ["x" * 60, "a b c d e f g h", "pneumonoultramicroscopicsilicovolcanoconiosis " * 3, "wing", "a b"]
    encoded = tokenizer(texts, truncation=True, max_length=32)
    counts = [len(ids) for ids in encoded["input_ids"]]
    rows, batches = padded_batches(tokenizer, encoded, 2)
    assert sorted(np.concatenate(rows).tolist()) == list(range(len(texts)))  # every text, once
    assert [counts[i] for i in np.concatenate(rows)] == sorted(counts, reverse=True)
    for r, batch in zip(rows, batches):
        assert batch["input_ids"].shape == (len(r), max(counts[i] for i in r))  # padded to its own longest
        for i, row in zip(r, batch["attention_mask"]):
            assert int(row.sum()) == counts[i]
