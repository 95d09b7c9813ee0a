"""Training a reranker that corrects the first stage: a tiny real run (seconds) and its pieces."""

import json

import pytest
import torch

from rag_rerank import CrossEncoderReranker
from rag_rerank.data import Dataset
from rag_rerank.training import Candidates, mine_candidates, train_reranker

TOPICS = ["slipstream", "buckling", "conduction", "creep", "flutter", "boundary"]


def toy_candidates(n: int) -> list[Candidates]:
    """Queries whose relevant passage (the one naming the topic) the 'first stage' ranked third."""
    items = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        others = [t for t in TOPICS if t != topic]
        passages = [
            f"a study of {others[0]}",
            f"notes on {others[1]}",
            f"the answer: {topic} case {i}",
            f"on {others[2]}",
        ]
        items.append(Candidates(f"{topic} question {i}", tuple(passages), (2,)))
    return items


def test_training_corrects_the_first_stage_and_saves_its_weight(tiny_cross_encoder_path, tmp_path):
    train, dev = toy_candidates(24), toy_candidates(30)[24:]
    out = train_reranker(
        train,
        tmp_path / "model",
        dev=dev,
        base_model=tiny_cross_encoder_path,
        epochs=8,
        group_size=4,
        groups_per_step=2,
        learning_rate=3e-3,
        max_length=32,
        bf16=False,
        fp16=True,
        show_progress=False,
    )
    saved = json.loads((out / "rag_rerank.json").read_text())
    assert saved["history"][0]["epoch"] == 0 and len(saved["history"]) == 9
    assert max(h["dev_ndcg@10"] for h in saved["history"][1:]) > saved["history"][0]["dev_ndcg@10"]
    reranker = CrossEncoderReranker(str(out), device="cpu", backend="torch")
    assert reranker.first_stage_weight == pytest.approx(saved["first_stage_weight"]) and reranker.first_stage_weight > 0
    assert next(reranker._model.model.parameters()).dtype.is_floating_point  # fp16 on disk, float32 in memory
    from sentence_transformers import CrossEncoder  # and float32 for anyone who loads it: fp16 is slow on CPUs

    assert next(CrossEncoder(str(out), device="cpu").model.parameters()).dtype == torch.float32
    for item in dev:
        ranked = reranker.rerank(item.query, list(item.passages))
        assert ranked[0].text == item.passages[2], [d.text for d in ranked]
        assert sorted(d.text for d in ranked) == sorted(item.passages)  # nothing lost


def test_a_trained_model_records_the_queries_and_documents_it_learned_from(tiny_cross_encoder_path, tmp_path):
    """Train and dev queries alike (dev chose the epoch), each with every document judged relevant to it."""
    from dataclasses import replace

    from rag_rerank.evaluation.memorisation import read_trained_on

    train = [
        replace(c, collection="toy", query_id=f"t{i}", relevant_ids=(f"doc{i}",))
        for i, c in enumerate(toy_candidates(4))
    ]
    dev = [replace(toy_candidates(1)[0], collection="toy", query_id="d0", relevant_ids=("doc9", "doc10"))]
    out = train_reranker(
        train,
        tmp_path / "m",
        dev=dev,
        base_model=tiny_cross_encoder_path,
        epochs=1,
        max_length=32,
        bf16=False,
        show_progress=False,
    )
    record = json.loads((out / "trained_on.json").read_text())
    assert record == {"toy": {"train": {f"t{i}": [f"doc{i}"] for i in range(4)}, "dev": {"d0": ["doc9", "doc10"]}}}
    assert read_trained_on(out)["toy"].relevant == {"doc0", "doc1", "doc2", "doc3", "doc9", "doc10"}


def test_a_model_that_does_not_beat_the_first_stage_says_so(tiny_cross_encoder_path, tmp_path):
    perfect = [Candidates("q", ("right", "wrong", "also wrong"), (0,))] * 4
    with pytest.warns(UserWarning, match="no epoch beat the first stage"):
        train_reranker(
            perfect,
            tmp_path / "m",
            dev=perfect,
            base_model=tiny_cross_encoder_path,
            epochs=1,
            bf16=False,
            max_length=16,
            show_progress=False,
        )


def test_no_queries_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no training queries"):
        train_reranker([], tmp_path)


def test_mined_candidates_mark_judged_documents(cranfield, cranfield_store):
    corpus_ids = {d.id for d in cranfield.corpus[:60]}
    queries = [q for q, g in cranfield.qrels.items() if any(d in corpus_ids and v > 0 for d, v in g.items())][:5]
    data = Dataset("c", cranfield.corpus[:60], {q: cranfield.queries[q] for q in queries}, cranfield.qrels)
    found = mine_candidates(data, cranfield_store, queries, depth=20)
    assert found == mine_candidates(data, cranfield_store, queries, depth=20)
    for item in found:
        hits = cranfield_store.retrieve(item.query, 20)
        assert item.passages == tuple(doc.text for doc in hits)
        gains = cranfield.qrels[next(q for q in queries if cranfield.queries[q] == item.query)]
        assert item.relevant == tuple(i for i, doc in enumerate(hits) if gains.get(doc.id, 0) > 0)
        assert item.collection == "c" and item.relevant_ids == tuple(sorted(d for d, g in gains.items() if g > 0))
