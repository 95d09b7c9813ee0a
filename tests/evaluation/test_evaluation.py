"""A small evaluation through the real code path: BM25, bi-encoder and hybrid over Chroma, a cross-encoder."""

import os
from pathlib import Path

import pytest

from rag_rerank import Document
from rag_rerank.data import Dataset, split_queries
from rag_rerank.evaluation.harness import evaluate

SHARED = Path(os.environ.get("RAG_RERANK_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
CRANFIELD = SHARED / "cranfield"


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
    assert names == ["BM25 (bm25s)", "dense (all-MiniLM-L6-v2)", "hybrid (weighted)", "tiny"]
    for result in report.results:
        assert set(result.metrics) == {"nDCG@10", "MRR@10", "Recall@100", "MAP"}
        assert all(0 <= v <= 1 for v in result.metrics.values())
        assert len(result.latencies_ms) == len(small.queries) and result.p95_ms >= result.median_ms > 0
    hybrid, tiny = report.results[2], report.results[3]
    for q in small.queries:  # the reranker reorders the hybrid top 20, keeps the rest, loses nothing
        assert sorted(tiny.run[q][:20]) == sorted(hybrid.run[q][:20]) and tiny.run[q][20:] == hybrid.run[q][20:]
        assert all(len(set(result.run[q])) == len(result.run[q]) for result in report.results), "a document twice"
    assert [p.depth for p in report.depth_curve] == [5, 10, 20]
    assert report.depth_curve[-1].metrics == tiny.metrics

    again = evaluate(small, cranfield_store, {"tiny": tiny_reranker}, depth=20, show_progress=False)
    assert [r.metrics for r in again.results] == [r.metrics for r in report.results]

    written = {p.name for p in report.write(tmp_path)}
    assert written == {"results.json", "runs.json", "results.csv", "results.md", "plots.png"}
    assert "| BM25 (bm25s) |" in (tmp_path / "results.md").read_text()


def test_summary_has_a_mean_row_per_system(small, cranfield_store):
    from rag_rerank.evaluation.harness import summary_markdown

    first = evaluate(small, cranfield_store, first_stages=("lexical", "dense"), show_progress=False)
    second = evaluate(small, cranfield_store, first_stages=("dense",), show_progress=False)
    table = summary_markdown([first, second], metrics=("nDCG@10",))
    bm25_row = next(line for line in table.splitlines() if line.startswith("| BM25"))
    assert bm25_row.endswith("| - | - |"), "missing from one collection: no mean"
    dense = [r.metrics["nDCG@10"] for r in (first.results[1], second.results[0])]
    dense_row = next(line for line in table.splitlines() if line.startswith("| dense"))
    assert dense_row.endswith(f"| {sum(dense) / 2:.3f} |")


def test_official_splits_and_cranfield_halves(cranfield):
    from rag_rerank.data import load_collection

    scifact = CRANFIELD.parent / "scifact"
    if scifact.exists():
        test, train = load_collection(scifact, "test"), load_collection(scifact, "train")
        assert len(test.queries) == 300 and len(train.queries) == 809 and not set(test.queries) & set(train.queries)
        assert len(load_collection(scifact, "all").queries) == 1109
    halves = [load_collection(CRANFIELD, split) for split in ("train", "test")]
    assert [sorted(h.queries) for h in halves] == [sorted(ids) for ids in split_queries(cranfield, 0.5, seed=0)]
    adi = CRANFIELD.parent / "adi"
    if adi.exists():
        with pytest.raises(ValueError, match="no 'train' split"):
            load_collection(adi, "train")


def test_split_is_fixed_disjoint_and_covers_judged_queries(cranfield):
    train, test = split_queries(cranfield, 0.5, seed=0)
    assert (train, test) == split_queries(cranfield, 0.5, seed=0)
    assert not set(train) & set(test)
    judged = {q for q, g in cranfield.qrels.items() if any(v > 0 for v in g.values())}
    assert set(train) | set(test) == judged and abs(len(train) - len(test)) <= 1
    assert split_queries(cranfield, 0.5, seed=1) != (train, test)


def test_documents_without_ids_are_refused_by_name():
    from rag_rerank.document import ids_of

    assert ids_of([Document("a", id="x"), Document("b", id="y")]) == ["x", "y"]
    with pytest.raises(ValueError, match="document 1 has no id"):
        ids_of([Document("a", id="x"), Document("b")])


class DropsTheLast:
    """A faulty reranker (as a user might write one): it loses the last candidate."""

    def __init__(self, inner):
        self.inner = inner

    def rerank(self, query, documents):
        return self.inner.rerank(query, documents)[:-1]


def test_a_reranker_that_loses_a_candidate_is_named_not_scored(small, cranfield_store, tiny_reranker):
    from rag_rerank.scale import rerank_row

    with pytest.raises(RuntimeError, match="reranker 'lossy', query .*did not return exactly its 20 candidates"):
        evaluate(small, cranfield_store, {"lossy": DropsTheLast(tiny_reranker)}, depth=20, show_progress=False)
    row = {"query": "wing flutter", "candidates": ["flutter of a wing", "heat transfer", "jet noise"]}
    assert len(rerank_row(tiny_reranker, row)["scores"]) == 3
    with pytest.raises(RuntimeError, match="in.jsonl:7: the reranker did not return exactly its 3 candidates"):
        rerank_row(DropsTheLast(tiny_reranker), row, "in.jsonl:7")
