"""A tiny fine-tuning run (seconds) through sentence-transformers' trainer and our loader."""

import pytest

from rag_rerank import CrossEncoderReranker
from rag_rerank.data import Dataset
from rag_rerank.training import Pair, mine_pairs, train_cross_encoder


def test_mined_pairs_have_judged_positives_and_unjudged_negatives(cranfield, cranfield_store):
    corpus_ids = {d.id for d in cranfield.corpus[:60]}
    query = next(q for q, g in cranfield.qrels.items() if any(d in corpus_ids and v > 0 for d, v in g.items()))
    data = Dataset("c", cranfield.corpus[:60], {query: cranfield.queries[query]}, {query: cranfield.qrels[query]})
    pairs = mine_pairs(data, cranfield_store, [query], negatives_per_query=5, random_negatives=3, skip_top=2)
    positives = [p for p in pairs if p.label > 0]
    assert len(pairs) - len(positives) == 8
    assert pairs == mine_pairs(data, cranfield_store, [query], negatives_per_query=5, random_negatives=3, skip_top=2)
    relevant_texts = {d.text for d in data.corpus if cranfield.qrels[query].get(d.id, 0) > 0}
    assert not any(p.passage in relevant_texts for p in pairs if p.label == 0)
    assert len(positives) == sum(1 for d, g in cranfield.qrels[query].items() if g > 0 and d in corpus_ids)
    assert all(p.label == 1.0 for p in positives)


def test_tiny_training_learns_and_saves_a_loadable_model(tiny_cross_encoder_path, tmp_path):
    positives = ["the wing stalls in a slipstream", "wing lift in the propeller slipstream", "slipstream over a wing"]
    negatives = ["buckling of cylindrical shells", "heat conduction in slabs", "creep of metals at high temperature"]
    pairs = [Pair("wing slipstream", p, 1.0) for p in positives] + [Pair("wing slipstream", n, 0.0) for n in negatives]
    before = CrossEncoderReranker(tiny_cross_encoder_path, device="cpu").score("wing slipstream", positives + negatives)
    out = train_cross_encoder(
        pairs * 4,
        tmp_path / "model",
        base_model=tiny_cross_encoder_path,
        epochs=6,
        batch_size=4,
        learning_rate=2e-3,
        max_length=32,
        show_progress=False,
    )
    assert (out / "training.txt").exists() and any((out / "checkpoints").iterdir())
    after = CrossEncoderReranker(str(out), device="cpu").score("wing slipstream", positives + negatives)
    assert min(after[:3]) > max(after[3:]), (before, after)


def test_no_pairs_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no training pairs"):
        train_cross_encoder([], tmp_path)


def test_title_pairs_use_the_corpus_not_the_queries(cranfield, cranfield_store):
    from rag_rerank.training import title_pairs

    data = Dataset("c", cranfield.corpus[:60], {}, {})
    pairs = title_pairs(data, cranfield_store, seed=0)
    positives = [p for p in pairs if p.label == 1.0]
    assert positives and len(pairs) > len(positives)
    titles = {d.metadata["title"] for d in data.corpus}
    assert all(p.query in titles for p in pairs)
    assert all(not p.passage.startswith(p.query) for p in positives), "the title is cut from its own positive"
    assert pairs == title_pairs(data, cranfield_store, seed=0)
