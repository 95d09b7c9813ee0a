"""LLM reranking through LangChain's own chat models: scripted fakes, and ChatOpenAI against
a local OpenAI-compatible HTTP endpoint (the real client path, on loopback only)."""

from __future__ import annotations

import pytest
from langchain_core.documents import Document as LCDocument
from langchain_core.language_models.fake_chat_models import FakeListChatModel, GenericFakeChatModel
from langchain_rag_rerank import LangChainLLM, RagRerankCompressor, RagRerankRetriever, build_rag_chain

from rag_rerank import Document, JudgementCache, ListwiseLLMReranker, PointwiseLLMReranker

DOCS = [Document(f"passage {i}", id=f"d{i}") for i in range(5)]


def ids(docs):
    return [d.id for d in docs]


def test_pointwise_sorts_by_rating_and_reports_malformed_answers():
    llm = LangChainLLM(FakeListChatModel(responses=["3", "garbage", "9", "11", "Relevance: 5"]))
    result = PointwiseLLMReranker(llm, max_concurrency=1).rerank_with_report("q", DOCS)
    assert ids(result.documents) == ["d2", "d4", "d0", "d1", "d3"]  # unrated ones last, in input order
    assert len(result.fallbacks) == 2 and "no rating" in result.fallbacks[0] and "outside 0-10" in result.fallbacks[1]
    assert len(result.calls) == 5 and all(call.prompt_tokens > 10 for call in result.calls)


def test_pointwise_timeout_and_errors_become_fallbacks():
    slow = LangChainLLM(FakeListChatModel(responses=["7"], sleep=2.0))
    result = PointwiseLLMReranker(slow, timeout=0.2, max_concurrency=5).rerank_with_report("q", DOCS)
    assert ids(result.documents) == ids(DOCS)  # every document, in input order, none rated
    assert len(result.fallbacks) == len(DOCS) and all("timed out after 0.2s" in f for f in result.fallbacks)
    assert all(call.error == "timed out after 0.2s" and call.completion_tokens == 0 for call in result.calls)

    broken = LangChainLLM(GenericFakeChatModel(messages=iter([])))  # raises on the first call
    result = PointwiseLLMReranker(broken).rerank_with_report("q", DOCS[:2])
    assert ids(result.documents) == ["d0", "d1"] and len(result.fallbacks) == 2


async def test_pointwise_async_matches_sync():
    answers = ["1", "8", "4", "8", "0"]
    sync = PointwiseLLMReranker(LangChainLLM(FakeListChatModel(responses=answers)), max_concurrency=1).rerank("q", DOCS)
    reranker = PointwiseLLMReranker(LangChainLLM(FakeListChatModel(responses=answers)), max_concurrency=1)
    assert ids(await reranker.arerank("q", DOCS)) == ids(sync) == ["d1", "d3", "d2", "d0", "d4"]


def test_listwise_sliding_window_with_bad_answers():
    # 5 docs, window 3, step 2: windows (2,5) then (0,3)
    llm = LangChainLLM(FakeListChatModel(responses=["[3] > [3] > [7] > [1]", "[2] > [1] > [3]"]))
    result = ListwiseLLMReranker(llm, window=3, step=2).rerank_with_report("q", DOCS)
    # window (2,5) = d2 d3 d4 -> d4 d2 d3 (3 ranked, then 1; 2 missing); list: d0 d1 d4 d2 d3
    # window (0,3) = d0 d1 d4 -> d1 d0 d4
    assert ids(result.documents) == ["d1", "d0", "d4", "d2", "d3"]
    assert [d.score for d in result.documents] == pytest.approx([1.0, 0.8, 0.6, 0.4, 0.2])  # 1 - rank / n
    assert {d.score_kind for d in result.documents} == {"position"}
    assert len(result.fallbacks) == 1 and "out of range" in result.fallbacks[0] and "repeated" in result.fallbacks[0]


def test_listwise_refusal_keeps_order_and_reports():
    llm = LangChainLLM(FakeListChatModel(responses=["I'm sorry, I can't help with that."]))
    result = ListwiseLLMReranker(llm, window=20, step=10).rerank_with_report("q", DOCS)
    assert ids(result.documents) == ids(DOCS) and "no ids" in result.fallbacks[0]


def test_listwise_edge_cases_need_no_call():
    llm = LangChainLLM(FakeListChatModel(responses=["[1]"]))
    assert ListwiseLLMReranker(llm).rerank_with_report("q", []).calls == []
    one = ListwiseLLMReranker(llm).rerank_with_report("q", DOCS[:1])
    assert ids(one.documents) == ["d0"] and one.calls == []


def test_cache_answers_repeated_prompts_without_calling_again():
    cache = JudgementCache()
    first = PointwiseLLMReranker(LangChainLLM(FakeListChatModel(responses=["2", "9"])), cache=cache, max_concurrency=1)
    assert ids(first.rerank("q", DOCS[:2])) == ["d1", "d0"]
    # a different model object that would answer otherwise: the cache is keyed by model name and prompt
    second = PointwiseLLMReranker(LangChainLLM(FakeListChatModel(responses=["9", "2"])), cache=cache)
    result = second.rerank_with_report("q", DOCS[:2])
    assert ids(result.documents) == ["d1", "d0"] and all(call.cached for call in result.calls)


def test_prompts_are_visible_and_overridable():
    reranker = PointwiseLLMReranker(
        LangChainLLM(FakeListChatModel(responses=["5"])), prompt="Q={query} P={passage} score?"
    )
    assert reranker.prompts("wing", DOCS[:1]) == ["Q=wing P=passage 0 score?"]


def test_unwrapped_model_gets_a_clear_error():
    with pytest.raises(TypeError, match="LangChainLLM"):
        PointwiseLLMReranker(FakeListChatModel(responses=["1"]))


def test_llm_reranker_in_the_compressor_returns_every_document():
    compressor = RagRerankCompressor(
        reranker=ListwiseLLMReranker(LangChainLLM(FakeListChatModel(responses=["[2] > [1]"]))), top_n=None
    )
    out = compressor.compress_documents([LCDocument(page_content="a"), LCDocument(page_content="b")], "q")
    assert [d.page_content for d in out] == ["b", "a"] and out[0].metadata["relevance_score"] == 1.0
    assert out[1].metadata["relevance_score"] == 0.5 and out[1].metadata["score_kind"] == "position"


def test_chatopenai_against_a_local_openai_compatible_server(cranfield_store, openai_server):
    from langchain_openai import ChatOpenAI

    chat = ChatOpenAI(model="stub-model", base_url=openai_server.base_url, api_key="test-key", max_retries=0)
    listwise = ListwiseLLMReranker(LangChainLLM(chat), window=4, step=2)
    candidates = cranfield_store.query("wing slipstream", k=6)
    result = listwise.rerank_with_report("wing slipstream", candidates)
    requests = openai_server.requests
    assert len(requests) == 2  # windows (2,6), (0,4)
    assert requests[0]["auth"] == "Bearer test-key" and requests[0]["path"] == "/v1/chat/completions"
    assert requests[0]["body"]["model"] == "stub-model"
    assert sorted(ids(result.documents)) == sorted(ids(candidates)) and not result.fallbacks

    pointwise = PointwiseLLMReranker(LangChainLLM(chat), max_concurrency=3)
    docs = [Document("a wing in a slipstream", id="hit"), Document("shell buckling", id="miss")]
    assert ids(pointwise.rerank("wing slipstream", docs)) == ["hit", "miss"]


async def test_rag_chain_streams_an_answer_from_reranked_context(cranfield_store, tiny_reranker):
    retriever = RagRerankRetriever(store=cranfield_store, reranker=tiny_reranker, k=3, fetch_k=10)
    chain = build_rag_chain(
        retriever, FakeListChatModel(responses=["It is [1].", "Again [2]."]), max_context_tokens=400, order="edges"
    )
    assert chain.invoke("what is a slipstream?") == "It is [1]."
    pieces = [piece async for piece in chain.astream("what is a slipstream?")]
    assert len(pieces) > 1 and "".join(pieces) == "Again [2]."
