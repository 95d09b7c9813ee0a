"""Memorisation made visible: what a model learned from, the test queries whose relevant documents it
never saw, and the document-prior baseline (what memorising relevant documents alone buys)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from rag_rerank import Document
from rag_rerank.data import Dataset
from rag_rerank.evaluation.harness import ALL, UNSEEN, evaluate
from rag_rerank.evaluation.memorisation import (
    DocumentPrior,
    TrainingData,
    overlap,
    pick_bonus,
    read_qrels,
    read_trained_on,
)

SCIFACT = (
    Path(os.environ.get("RAG_RERANK_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data")) / "scifact"
)


def test_the_shipped_model_records_its_training_data_and_scifact_test_overlaps_it():
    """SciFact's test split shares 181 of its 283 relevant documents with its train split."""
    from rag_rerank.data import load_collection
    from rag_rerank.models import SHIPPED_CROSS_ENCODER

    if not SCIFACT.exists():
        pytest.skip(f"SciFact not found at {SCIFACT}")
    learned = read_trained_on(SHIPPED_CROSS_ENCODER)
    assert set(learned) == {"scifact", "cranfield"} and len(learned["scifact"].qrels) == 809
    found = overlap(load_collection(SCIFACT, "test").qrels, learned["scifact"])
    assert (found.test_relevant, found.shared, found.queries, found.touched, len(found.unseen)) == (
        283,
        181,
        300,
        196,
        104,
    )
    assert "shares 181 of its 283 relevant documents" in found.warning("scifact")
    assert read_trained_on(SCIFACT) == {}  # a folder without the record: nothing learned that we know of


def test_qrels_are_read_in_beir_and_trec_form_and_a_bad_line_is_named(tmp_path):
    beir, trec, bad = tmp_path / "train.tsv", tmp_path / "qrels.txt", tmp_path / "bad.tsv"
    beir.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t0\nq2\td3\t2\n")
    trec.write_text("q1 0 d1 1\nq2 0 d3 2\n")
    bad.write_text("query-id\tcorpus-id\tscore\nq1\td1\tyes\n")
    assert read_qrels(beir) == {"q1": {"d1": 1, "d2": 0}, "q2": {"d3": 2}}
    assert read_qrels(trec) == {"q1": {"d1": 1}, "q2": {"d3": 2}}
    with pytest.raises(ValueError, match="bad.tsv:2"):
        read_qrels(bad)


def test_the_document_prior_lifts_documents_relevant_in_training_and_keeps_every_one():
    docs = [Document(f"text {i}", id=f"d{i}", score=1.0 - i / 10, score_kind="fused") for i in range(5)]
    ranked = DocumentPrior({"d3"}, 0.25).rerank("any query", docs)
    assert [d.id for d in ranked] == ["d0", "d3", "d1", "d2", "d4"]  # 0.7 + 0.25 = 0.95: second
    assert ranked[1].score == pytest.approx(0.95) and ranked[1].score_kind == "fused"
    assert [d.id for d in DocumentPrior({"d3"}, 0.0).rerank("q", docs)] == [d.id for d in docs]


def first_stage(popular: str):
    """A first stage that ranks the queries' own documents first and ``popular`` fifth, for any query."""

    def search(query: str) -> list[Document]:
        ids = [f"{query}-a", f"{query}-b", f"{query}-c", f"{query}-d", popular]
        return [Document(i, id=i, score=1.0 - rank / 10, score_kind="fused") for rank, i in enumerate(ids)]

    return search


def test_the_bonus_pays_only_where_training_queries_share_relevant_documents():
    """Each training query's prior comes from the others alone: a document relevant to every query
    earns a bonus; documents relevant to one query each earn none (they help no other query)."""
    queries = {f"q{i}": f"q{i}" for i in range(6)}
    shared = TrainingData("c", {q: {"popular": 1} for q in queries}, queries)
    bonus, means = pick_bonus(shared, first_stage("popular"))
    assert bonus > 0 and means[bonus] == 1.0 and means[0.0] < 1.0
    own = TrainingData("c", {q: {f"{q}-d": 1} for q in queries}, queries)
    assert pick_bonus(own, first_stage("popular"))[0] == 0.0
    with pytest.raises(ValueError, match="no training query text"):
        pick_bonus(TrainingData("c", own.qrels), first_stage("popular"))


@pytest.fixture(scope="module")
def split_cranfield(cranfield):
    """The first 60 Cranfield abstracts; the judged queries cut into 6 for training and the rest for test."""
    corpus = cranfield.corpus[:60]
    ids = {d.id for d in corpus}
    qrels = {q: {d: g for d, g in gains.items() if d in ids} for q, gains in cranfield.qrels.items()}
    judged = [q for q, g in qrels.items() if any(v > 0 for v in g.values())]
    train, test = judged[:6], judged[6:14]
    training = TrainingData("cranfield-60", {q: qrels[q] for q in train}, {q: cranfield.queries[q] for q in train})
    return Dataset(
        "cranfield-60", corpus, {q: cranfield.queries[q] for q in test}, {q: qrels[q] for q in test}
    ), training


def test_an_evaluation_of_a_trained_model_shows_what_memorisation_alone_buys(
    split_cranfield, cranfield_store, tiny_reranker, tmp_path, recwarn
):
    test, training = split_cranfield
    report = evaluate(test, cranfield_store, {"tiny": tiny_reranker}, depth=20, training=training, show_progress=False)
    names = [r.name for r in report.results]
    prior = names[-2]
    assert prior.startswith("hybrid (weighted) + document prior (bonus") and names[-1] == "tiny"
    found = overlap(test.qrels, training)
    assert report.subsets.get(UNSEEN, []) == found.unseen
    if found.warning(test.name):
        assert found.warning(test.name) in report.notes and any("shares" in str(w.message) for w in recwarn)
    for subset in [ALL, *report.subsets]:  # each system against the baseline, and the rerankers against each other
        pairs = {(d.system, d.baseline) for d in report.differences[subset]}
        assert {(n, "hybrid (weighted)") for n in names if n != "hybrid (weighted)"} <= pairs
        assert ("tiny", prior) in pairs
    for d in report.differences[ALL]:
        assert d.low <= d.mean <= d.high and 0 < d.p_value <= 1 and d.queries == len(test.queries)
    markdown = report.to_markdown()
    assert "nDCG@10 vs hybrid (weighted)" in markdown and f"seed {report.seed}" in markdown
    if found.unseen:
        assert f"On the {len(found.unseen)} {UNSEEN}" in markdown
    written = {p.name for p in report.write(tmp_path)}
    assert {"results.json", "runs.json", "results.csv", "results.md"} <= written
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["seed"] == report.seed and set(saved["per_query"]) == set(names)
    assert set(saved["per_query"]["tiny"]) == set(test.queries) and saved["differences"][ALL][0]["significant"] in (
        True,
        False,
    )
    assert json.loads((tmp_path / "runs.json").read_text())["tiny"] == report.results[-1].run
