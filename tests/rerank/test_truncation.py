"""Truncation is never silent: every stage that reads only part of a passage marks it in the
passage's metadata (``truncated_by``) and says how many; packing says when the best document
does not fit."""

from __future__ import annotations

import logging

import pytest

from rag_rerank import ChromaStore, ChunkSpec, Document, PointwiseLLMReranker, pack_context

LONG = " ".join(f"word{i} about the boundary layer" for i in range(400))


def test_the_cross_encoder_marks_passages_it_cut(tiny_reranker, caplog):
    caplog.set_level(logging.INFO)
    ranked = tiny_reranker.rerank("boundary layer", [Document("a short passage", id="s"), Document(LONG, id="l")])
    marks = {doc.id: doc.metadata.get("truncated_by") for doc in ranked}
    assert marks == {"s": None, "l": ["cross-encoder"]}
    assert "1 of 2 passages were longer than" in caplog.text


def test_the_bi_encoder_marks_chunks_it_could_not_read_whole(tmp_path, bi_encoder, caplog):
    spec = ChunkSpec(size=600, overlap=0, fit_bi_encoder=False)  # chunks longer than MiniLM's 256 word pieces
    store = ChromaStore("cut", path=tmp_path, bi_encoder=bi_encoder, chunking=spec)
    report = store.ingest([Document(LONG, id="long"), Document("short text", id="short")])
    assert report.truncated >= 1 and "embedded in part" in caplog.text
    hits = store.retrieve("boundary layer", 2, mode="dense")
    marks = {doc.id: doc.metadata.get("truncated_by") for doc in hits}
    assert marks["long"] == ["bi-encoder"] and marks["short"] is None
    fitted = ChromaStore("fit", path=tmp_path, bi_encoder=bi_encoder)  # the default: nothing is cut
    assert fitted.ingest([Document(LONG, id="long")]).truncated == 0


def test_llm_prompts_mark_passages_they_cut():
    class Echo:
        model_name = "echo"

        def complete(self, prompt):
            return "5"

        async def acomplete(self, prompt):
            return "5"

    reranker = PointwiseLLMReranker(Echo(), max_passage_tokens=20)
    ranked = reranker.rerank("q", [Document("short", id="s"), Document(LONG, id="l")])
    assert {d.id: d.metadata.get("truncated_by") for d in ranked} == {"s": None, "l": ["llm-prompt"]}


def test_the_stages_add_up_and_the_reserved_key_is_refused(tiny_reranker, tmp_path, bi_encoder):
    doc = Document(LONG, id="l", metadata={"truncated_by": ["bi-encoder"]})
    assert tiny_reranker.rerank("q", [doc])[0].metadata["truncated_by"] == ["bi-encoder", "cross-encoder"]
    with pytest.raises(ValueError, match="reserved"):
        ChromaStore("res", path=tmp_path, bi_encoder=bi_encoder).ingest([doc])


def test_packing_says_when_the_best_document_does_not_fit(caplog):
    docs = [Document(LONG, id="best"), Document("a short one", id="next")]
    packed = pack_context(docs, max_tokens=100)
    assert [d.id for d in packed.documents] == ["next"] and [d.id for d in packed.dropped] == ["best"]
    assert "the best document ('best'" in caplog.text
