"""Our metrics against ranx, a well-known implementation, on synthetic and real runs."""

import random

import pytest
from ranx import Qrels, Run
from ranx import evaluate as ranx_evaluate

from rag_rerank.evaluation.metrics import average_precision, mrr, ndcg, recall, score_run

RANX_NAMES = {"nDCG@10": "ndcg@10", "MRR@10": "mrr@10", "Recall@100": "recall@100", "MAP": "map"}


def _compare(run: dict[str, list[str]], qrels: dict[str, dict[str, int]]) -> None:
    ours = score_run(run, qrels)
    ranx_run = Run({q: {doc: float(len(docs) - i) for i, doc in enumerate(docs)} for q, docs in run.items()})
    judged = {q: g for q, g in qrels.items() if any(v > 0 for v in g.values())}
    theirs = ranx_evaluate(Qrels(judged), ranx_run, list(RANX_NAMES.values()))
    for name, ranx_name in RANX_NAMES.items():
        assert ours[name] == pytest.approx(theirs[ranx_name], abs=1e-6), name


def test_hand_computed_values():
    gains = {"a": 3, "b": 0, "c": 1}
    assert ndcg(["b", "a", "c"], gains, 10) == pytest.approx((3 / 1.5849625 + 1 / 2) / (3 + 1 / 1.5849625), rel=1e-6)
    assert mrr(["b", "x", "c"], gains) == pytest.approx(1 / 3)
    assert recall(["a", "b"], gains, 100) == 0.5
    assert average_precision(["x", "a", "y", "c"], gains) == pytest.approx((1 / 2 + 2 / 4) / 2)


def test_matches_ranx_on_random_runs():
    rng = random.Random(7)
    docs = [f"d{i}" for i in range(150)]
    qrels = {f"q{q}": {d: rng.choice([0, 1, 2, 3, 4]) for d in rng.sample(docs, 12)} for q in range(30)}
    run = {q: rng.sample(docs, 120) for q in qrels}
    _compare(run, qrels)


def test_matches_ranx_on_a_real_cranfield_run(cranfield):
    from rag_rerank.evaluation.harness import BM25

    bm25 = BM25(cranfield.corpus)
    qrels = {q: cranfield.qrels[q] for q in list(cranfield.queries)[:60] if q in cranfield.qrels}
    _compare({q: [d.id for d in bm25.search(cranfield.queries[q], 100)] for q in qrels}, qrels)


def test_missing_query_counts_as_zero_not_skipped():
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    assert score_run({"q1": ["a"]}, qrels)["MRR@10"] == 0.5


def test_no_judged_query_is_an_error():
    with pytest.raises(ValueError, match="no query in qrels"):
        score_run({}, {"q": {"a": 0}})
