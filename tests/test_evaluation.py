"""A small evaluation through the real code path: BM25, Chroma bi-encoder, a cross-encoder."""

import pytest

from rag_rerank.data import Dataset
from rag_rerank.evaluation import evaluate
from rag_rerank.training import split_queries


@pytest.fixture(scope="module")
def small(cranfield):
    corpus = cranfield.corpus[:60]
    ids = {d.id for d in corpus}
    qrels = {q: {d: g for d, g in gains.items() if d in ids} for q, gains in cranfield.qrels.items()}
    judged = [q for q, g in qrels.items() if any(v > 0 for v in g.values())][:8]
    return Dataset("cranfield-60", corpus, {q: cranfield.queries[q] for q in judged}, {q: qrels[q] for q in judged})


def test_eval_reports_every_system_and_is_deterministic(small, cranfield_store, tiny_reranker, tmp_path):
    report = evaluate(small, cranfield_store, {"tiny": tiny_reranker}, depth=20, show_progress=False)
    names = [r.name for r in report.results]
    assert names[0] == "BM25" and names[1].startswith("bi-encoder") and names[2] == "tiny"
    for result in report.results:
        assert set(result.metrics) == {"nDCG@10", "MRR@10", "Recall@100", "MAP"}
        assert all(0 <= v <= 1 for v in result.metrics.values())
        assert len(result.latencies_ms) == len(small.queries) and result.p95_ms >= result.median_ms > 0
    bi, tiny = report.results[1], report.results[2]
    for q in small.queries:  # the reranker reorders the top 20, keeps the rest, loses nothing
        assert sorted(tiny.run[q][:20]) == sorted(bi.run[q][:20]) and tiny.run[q][20:] == bi.run[q][20:]
    assert [p.depth for p in report.depth_curve] == [5, 10, 20]
    assert report.depth_curve[-1].metrics == tiny.metrics

    again = evaluate(small, cranfield_store, {"tiny": tiny_reranker}, depth=20, show_progress=False)
    assert [r.metrics for r in again.results] == [r.metrics for r in report.results]

    written = {p.name for p in report.write(tmp_path)}
    assert written == {"results.json", "results.csv", "results.md", "plots.png"}
    assert "| BM25 |" in (tmp_path / "results.md").read_text()


def test_split_is_fixed_disjoint_and_covers_judged_queries(cranfield):
    train, test = split_queries(cranfield, 0.5, seed=0)
    assert (train, test) == split_queries(cranfield, 0.5, seed=0)
    assert not set(train) & set(test)
    judged = {q for q, g in cranfield.qrels.items() if any(v > 0 for v in g.values())}
    assert set(train) | set(test) == judged and abs(len(train) - len(test)) <= 1
    assert split_queries(cranfield, 0.5, seed=1) != (train, test)
