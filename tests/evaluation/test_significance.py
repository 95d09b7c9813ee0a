"""Paired significance: our randomization test against ranx's on the same runs, and the bootstrap
interval's behaviour (seeded, around the observed difference, wide where the data are few)."""

from __future__ import annotations

import numpy as np
import pytest
from ranx import Qrels, Run, compare

from rag_rerank.evaluation.metrics import score_queries, score_run
from rag_rerank.evaluation.significance import bootstrap_interval, compare_paired, randomization_p_value


def two_runs(shift: float, queries: int = 40, seed: int = 0):
    """Qrels of ``queries`` queries (three relevant of twenty documents each), a run ranking at random
    and a run that scores the relevant documents ``shift`` higher."""
    rng = np.random.default_rng(seed)
    qrels = {f"q{i}": {f"d{j}": 1 for j in range(3)} for i in range(queries)}
    noise = {q: rng.random(20) for q in qrels}
    runs = []
    for boost in (0.0, shift):
        scores = {
            q: {f"d{j}": float(noise[q][j] + (boost if j < 3 else 0.0) + 1e-6 * j) for j in range(20)} for q in qrels
        }
        runs.append(scores)
    return qrels, runs


def ours(qrels, runs):
    ranked = [{q: sorted(scores, key=lambda d: -scores[d]) for q, scores in run.items()} for run in runs]
    per_query = [{q: values["nDCG@10"] for q, values in score_queries(run, qrels).items()} for run in ranked]
    return compare_paired("b", "a", "nDCG@10", per_query[1], per_query[0], permutations=20_000), ranked


@pytest.mark.parametrize("shift", [0.0, 0.15, 0.3, 0.8])
def test_the_randomization_test_agrees_with_ranx_on_the_same_runs(shift):
    qrels, runs = two_runs(shift)
    difference, ranked = ours(qrels, runs)
    report = compare(
        Qrels(qrels),
        [Run(runs[0], name="a"), Run(runs[1], name="b")],
        ["ndcg@10"],
        stat_test="fisher",
        n_permutations=20_000,
        random_seed=1,
    )
    theirs = report.to_dict()["a"]["comparisons"]["b"]["ndcg@10"]
    assert difference.mean == pytest.approx(
        score_run(ranked[1], qrels)["nDCG@10"] - score_run(ranked[0], qrels)["nDCG@10"]
    )
    assert difference.p_value == pytest.approx(theirs, abs=0.015)  # two Monte Carlo estimates of one p-value
    assert difference.significant == (theirs < 0.05) or abs(theirs - 0.05) < 0.015


def test_identical_systems_differ_by_nothing_and_a_large_gain_is_significant():
    qrels, runs = two_runs(0.0)
    same, _ = ours(qrels, [runs[0], runs[0]])
    assert (same.mean, same.low, same.high, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert not same.significant and "not significant" in same.label()
    large, _ = ours(qrels, two_runs(2.0)[1])
    assert large.low > 0 and large.p_value < 0.001 and large.significant and "not significant" not in large.label()


def test_the_interval_is_seeded_holds_the_mean_and_narrows_with_more_queries():
    rng = np.random.default_rng(3)
    few, many = rng.normal(0.02, 0.1, 20), rng.normal(0.02, 0.1, 2000)
    assert bootstrap_interval(few, seed=5) == bootstrap_interval(few, seed=5)
    assert bootstrap_interval(few, seed=5) != bootstrap_interval(few, seed=6)
    low, high = bootstrap_interval(few)
    assert low < few.mean() < high
    many_low, many_high = bootstrap_interval(many)
    assert many_high - many_low < (high - low) / 5  # about 1/sqrt(100) as wide
    assert randomization_p_value(many) < 0.001 and randomization_p_value(few) > 0.05


def test_systems_that_share_no_query_cannot_be_compared():
    with pytest.raises(ValueError, match="share no query"):
        compare_paired("b", "a", "nDCG@10", {"q1": 1.0}, {"q2": 0.5})
