"""Text that is not valid Unicode (a lone surrogate, as JSON's "\\ud800" parses) is a clear error at
every entry point that takes text, naming which text, before any model or store sees it."""

from __future__ import annotations

import pytest

from rag_rerank import Document, ListwiseLLMReranker

BROKEN = "a wing \ud800 in a slipstream"  # a lone surrogate: no character at all


def test_the_reranker_names_the_text_that_is_not_valid_unicode(tiny_reranker):
    with pytest.raises(ValueError, match="query is not valid Unicode: a lone surrogate .* at character 7"):
        tiny_reranker.rerank(BROKEN, ["a"])
    with pytest.raises(ValueError, match="passage 1 is not valid Unicode"):
        tiny_reranker.rerank("wing", ["a", BROKEN])
    with pytest.raises(ValueError, match="passage 0 is not valid Unicode"):
        tiny_reranker.score("wing", [BROKEN])
    with pytest.raises(ValueError, match="pair 1: passage is not valid Unicode"):
        tiny_reranker.score_pairs([("wing", "a"), ("wing", BROKEN)])


def test_the_llm_reranker_names_it_before_any_call():
    prompts = []

    class Counting:  # any object with model_name, complete and acomplete is an LLM to the rerankers
        model_name = "gpt-4o-mini"

        def complete(self, prompt):
            prompts.append(prompt)
            return "[1] > [2]"

        async def acomplete(self, prompt):
            return self.complete(prompt)

    reranker = ListwiseLLMReranker(Counting())
    with pytest.raises(ValueError, match="passage 1 is not valid Unicode"):
        reranker.rerank("wing", ["a", BROKEN])
    with pytest.raises(ValueError, match="query is not valid Unicode"):
        reranker.rerank(BROKEN, ["a"])
    assert prompts == []


def test_the_bi_encoder_and_the_store_name_it_and_write_nothing(bi_encoder, empty_store):
    with pytest.raises(ValueError, match="passage 1 is not valid Unicode"):
        bi_encoder.embed_documents(["a", BROKEN])
    with pytest.raises(ValueError, match="query is not valid Unicode"):
        bi_encoder.embed_query(BROKEN)
    docs = [Document("a wing", id="ok"), Document(BROKEN, id="bad")]
    with pytest.raises(ValueError, match="document 1 \\('bad'\\) is not valid Unicode"):
        empty_store.ingest(docs)
    assert empty_store.count() == 0  # checked before anything was written
    empty_store.ingest(docs[:1])
    for mode in ("hybrid", "dense", "lexical"):
        with pytest.raises(ValueError, match="query is not valid Unicode"):
            empty_store.retrieve(BROKEN, 3, mode=mode)
    with pytest.raises(ValueError, match="query is not valid Unicode"):
        empty_store.query(BROKEN)
