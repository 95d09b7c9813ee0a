"""The LangChain adapters inside real LangChain objects (retrievers, compressor, LCEL)."""

from __future__ import annotations

import pytest
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.documents import Document as LCDocument
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough
from langchain_rag_rerank import RagRerankCompressor, RagRerankRetriever

DOCS = [
    LCDocument(page_content="an experimental study of a wing in a propeller slipstream", metadata={"n": 0}, id="a"),
    LCDocument(page_content="heat transfer in hypersonic flow", metadata={"n": 1}, id="b"),
    LCDocument(page_content="buckling of thin cylindrical shells", metadata={"n": 2}, id="c"),
    LCDocument(page_content="flutter of panels at supersonic speed", metadata={"n": 3}),
]


def test_retriever_first_stage_only(cranfield_store):
    docs = RagRerankRetriever(store=cranfield_store, k=3).invoke("wing in a slipstream")
    assert len(docs) == 3
    assert all(isinstance(d, LCDocument) and "retrieval_score" in d.metadata for d in docs)
    assert docs[0].metadata["source_id"] == "1"  # Cranfield doc 1 is about exactly that


def test_retriever_with_reranker_sync_and_async(cranfield_store, tiny_reranker):
    retriever = RagRerankRetriever(store=cranfield_store, reranker=tiny_reranker, k=4, fetch_k=20)
    sync = retriever.invoke("wing in a slipstream")
    assert len(sync) == 4
    scores = [d.metadata["relevance_score"] for d in sync]
    assert scores == sorted(scores, reverse=True)
    candidates = cranfield_store.retrieve("wing in a slipstream", 20)  # hybrid, whole documents
    expected = tiny_reranker.rerank("wing in a slipstream", candidates, top_n=4)
    assert [d.id for d in sync] == [d.id for d in expected]


async def test_retriever_async_matches_sync(cranfield_store, tiny_reranker):
    retriever = RagRerankRetriever(store=cranfield_store, reranker=tiny_reranker, k=4, fetch_k=20)
    assert [d.id for d in await retriever.ainvoke("shock waves")] == [d.id for d in retriever.invoke("shock waves")]


def test_retriever_per_call_k_and_filter(cranfield_store):
    retriever = RagRerankRetriever(store=cranfield_store, k=5)
    docs = retriever.invoke("flow", k=2, where={"source_id": {"$in": ["3", "4", "5"]}})
    assert len(docs) == 2 and {d.metadata["source_id"] for d in docs} <= {"3", "4", "5"}


def test_compressor_returns_every_document_once(tiny_reranker):
    out = RagRerankCompressor(reranker=tiny_reranker).compress_documents(DOCS, "wing")
    assert len(out) == len(DOCS)
    assert sorted(d.page_content for d in out) == sorted(d.page_content for d in DOCS)
    assert all(d.metadata["n"] == next(x.metadata["n"] for x in DOCS if x.page_content == d.page_content) for d in out)
    assert {d.id for d in out} == {"a", "b", "c", None}


async def test_compressor_async_and_top_n(tiny_reranker):
    compressor = RagRerankCompressor(reranker=tiny_reranker, top_n=2)
    sync = compressor.compress_documents(DOCS, "wing")
    assert len(sync) == 2
    assert [d.page_content for d in await compressor.acompress_documents(DOCS, "wing")] == [
        d.page_content for d in sync
    ]


async def test_compressor_in_contextual_compression_retriever(cranfield_store, tiny_reranker):
    retriever = ContextualCompressionRetriever(
        base_compressor=RagRerankCompressor(reranker=tiny_reranker, top_n=3),
        base_retriever=RagRerankRetriever(store=cranfield_store, k=15),
    )
    docs = retriever.invoke("pressure distribution on a cone")
    assert len(docs) == 3 and all("relevance_score" in d.metadata and "retrieval_score" in d.metadata for d in docs)
    assert [d.id for d in await retriever.ainvoke("pressure distribution on a cone")] == [d.id for d in docs]


async def test_lcel_chain_answers_from_reranked_context(cranfield_store, tiny_reranker):
    retriever = RagRerankRetriever(store=cranfield_store, reranker=tiny_reranker, k=2, fetch_k=10)
    prompt = ChatPromptTemplate.from_template("Context:\n{context}\n\nQuestion: {question}")
    seen = {}

    def format_docs(docs):
        seen["docs"] = docs
        return "\n\n".join(d.page_content for d in docs)

    chain = (
        {"context": retriever | format_docs, "question": RunnablePassthrough()}
        | prompt
        | FakeListChatModel(responses=["a slipstream answer", "again"])
        | StrOutputParser()
    )
    assert chain.invoke("what is a slipstream?") == "a slipstream answer"
    assert len(seen["docs"]) == 2
    assert await chain.ainvoke("what is a slipstream?") == "again"


async def test_lcel_chain_answers_with_a_real_llm(cranfield_store, tiny_reranker, llama_server):
    """The same chain with LangChain's ChatOpenAI over llama.cpp's server (SmolLM2): a generated answer."""
    from langchain_openai import ChatOpenAI

    retriever = RagRerankRetriever(store=cranfield_store, reranker=tiny_reranker, k=2, fetch_k=10)
    prompt = ChatPromptTemplate.from_template("Context:\n{context}\n\nQuestion: {question}\nAnswer in one sentence.")
    chat = ChatOpenAI(base_url=llama_server, api_key="-", model="smollm2-135m-instruct", temperature=0, max_tokens=48)
    chain = (
        {
            "context": retriever | (lambda docs: "\n\n".join(d.page_content for d in docs)),
            "question": RunnablePassthrough(),
        }
        | prompt
        | chat
        | StrOutputParser()
    )
    answer = await chain.ainvoke("what is a slipstream?")
    assert len(answer.split()) >= 3


def test_compressor_rejects_empty_query(tiny_reranker):
    with pytest.raises(ValueError, match="query is empty"):
        RagRerankCompressor(reranker=tiny_reranker).compress_documents(DOCS, "")


def test_relevance_score_is_0_to_1_like_cohere_and_says_what_it_was(cranfield_store, tiny_reranker):
    from rag_rerank.scores import sigmoid

    docs = RagRerankRetriever(store=cranfield_store, reranker=tiny_reranker, k=5, fetch_k=20).invoke("shock waves")
    for doc in docs:
        assert 0 <= doc.metadata["relevance_score"] <= 1 and doc.metadata["score_kind"] == "logit"
        assert doc.metadata["relevance_score"] == pytest.approx(sigmoid(doc.metadata["rerank_score"]))
    compressor = RagRerankCompressor(reranker=tiny_reranker)
    scores = [d.metadata["relevance_score"] for d in compressor.compress_documents(DOCS, "wing")]
    cut_at = sorted(scores)[1]  # the threshold is on the 0..1 scale the metadata shows
    kept = RagRerankCompressor(reranker=tiny_reranker, threshold=cut_at).compress_documents(DOCS, "wing")
    assert [d.metadata["relevance_score"] for d in kept] == [s for s in scores if s >= cut_at]


async def test_text_that_is_not_valid_unicode_is_a_value_error_naming_it(cranfield_store, tiny_reranker):
    broken = [*DOCS[:1], LCDocument(page_content="a \ud800 wing")]
    compressor = RagRerankCompressor(reranker=tiny_reranker)
    with pytest.raises(ValueError, match="passage 1 is not valid Unicode"):
        compressor.compress_documents(broken, "wing")
    with pytest.raises(ValueError, match="query is not valid Unicode"):
        await compressor.acompress_documents(DOCS, "wing \ud800")
    with pytest.raises(ValueError, match="query is not valid Unicode"):
        RagRerankRetriever(store=cranfield_store, reranker=tiny_reranker).invoke("wing \ud800")


async def test_nan_scores_are_an_error_never_a_ranking(nan_reranker):
    from rag_rerank.inference.backend import NonFiniteOutput

    with pytest.raises(NonFiniteOutput, match="NaN or infinite logits"):
        RagRerankCompressor(reranker=nan_reranker).compress_documents(DOCS, "wing")
    with pytest.raises(NonFiniteOutput, match="NaN or infinite logits"):
        await RagRerankCompressor(reranker=nan_reranker).acompress_documents(DOCS, "wing")
