import json

import pytest

from rag_rerank import load_beir, load_documents


def test_cranfield_loader(cranfield):
    assert len(cranfield.corpus) == 1400 and len(cranfield.queries) == 225
    # queries are renumbered by position: the 3rd query in the file is `.I 004`
    assert cranfield.queries["3"].startswith("what problems of heat conduction in composite slabs")
    assert set(cranfield.qrels) <= set(cranfield.queries)
    # grade 2 -> gain 3 (query 1, doc 184); grade -1 -> gain 0
    assert cranfield.qrels["1"]["184"] == 3
    assert {g for gains in cranfield.qrels.values() for g in gains.values()} == {0, 1, 2, 3, 4}
    doc1 = cranfield.corpus[0]
    assert doc1.id == "1" and doc1.metadata["title"].startswith("experimental investigation")
    assert doc1.text.count("experimental investigation of the aerodynamics") == 1, "the title is not repeated"


def test_beir_loader(tmp_path):
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text(
        "\n".join(json.dumps(r) for r in [{"_id": "d1", "title": "T", "text": "x"}, {"_id": "d2", "text": "y"}])
    )
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "what"}\n{"_id": "q2", "text": "unjudged"}\n')
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td2\t1\n")
    data = load_beir(tmp_path)
    assert [d.id for d in data.corpus] == ["d1", "d2"] and data.corpus[0].text == "T\nx"
    assert data.queries == {"q1": "what"} and data.qrels == {"q1": {"d2": 1}}
    with pytest.raises(FileNotFoundError, match="BEIR"):
        load_beir(tmp_path, split="dev")


def test_load_documents_from_files(tmp_path):
    (tmp_path / "a.txt").write_text("plain text")
    (tmp_path / "b.jsonl").write_text('{"id": 7, "text": "row", "metadata": {"lang": "en"}}\n')
    docs = load_documents([tmp_path])
    assert {d.id for d in docs} == {str(tmp_path / "a.txt"), "7"}
    assert next(d for d in docs if d.id == "7").metadata == {"lang": "en"}
    (tmp_path / "bad.jsonl").write_text('{"text": "no id"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        load_documents([tmp_path / "bad.jsonl"])
