"""The LlamaIndex adapters inside real LlamaIndex objects (retriever, postprocessor, query engine)."""

from __future__ import annotations

import pytest
from llama_index.core.llms.mock import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from llama_index.postprocessor.rag_rerank import RagRerank
from llama_index.retrievers.rag_rerank import RagRerankRetriever

from rag_rerank.scores import sigmoid

NODES = [
    NodeWithScore(node=TextNode(text="an experimental study of a wing in a propeller slipstream", id_="a"), score=0.1),
    NodeWithScore(node=TextNode(text="heat transfer in hypersonic flow", id_="b"), score=0.9),
    NodeWithScore(node=TextNode(text="buckling of thin cylindrical shells", id_="c"), score=0.5),
    NodeWithScore(node=TextNode(text="buckling of thin cylindrical shells", id_="d"), score=0.5),
]


def test_postprocessor_sets_scores_and_keeps_every_node(tiny_reranker):
    out = RagRerank(reranker=tiny_reranker).postprocess_nodes(NODES, query_str="wing slipstream")
    assert sorted(n.node.node_id for n in out) == ["a", "b", "c", "d"]
    expected = tiny_reranker.score("wing slipstream", [n.node.get_content() for n in out])
    assert [n.score for n in out] == pytest.approx([sigmoid(x) for x in expected], abs=1e-6)  # logits, on 0..1
    assert [n.score for n in out] == sorted((n.score for n in out), reverse=True)


async def test_postprocessor_async_and_top_n(tiny_reranker):
    rerank = RagRerank(reranker=tiny_reranker, top_n=2)
    sync = rerank.postprocess_nodes(NODES, query_bundle=QueryBundle("wing"))
    assert len(sync) == 2
    assert [n.node.node_id for n in await rerank.apostprocess_nodes(NODES, query_bundle=QueryBundle("wing"))] == [
        n.node.node_id for n in sync
    ]


def test_postprocessor_needs_a_query(tiny_reranker):
    with pytest.raises(ValueError, match="needs the query"):
        RagRerank(reranker=tiny_reranker).postprocess_nodes(NODES)


def test_retriever_first_stage(cranfield_store):
    nodes = RagRerankRetriever(cranfield_store, k=3).retrieve("wing in a slipstream")
    assert len(nodes) == 3
    assert nodes[0].node.metadata["source_id"] == "1"
    assert nodes[0].score == pytest.approx(nodes[0].node.metadata["retrieval_score"])


async def test_retriever_with_reranker_sync_and_async(cranfield_store, tiny_reranker):
    retriever = RagRerankRetriever(cranfield_store, reranker=tiny_reranker, k=4, fetch_k=20)
    nodes = retriever.retrieve("shock waves")
    expected = tiny_reranker.rerank("shock waves", cranfield_store.retrieve("shock waves", 20), top_n=4)
    assert [n.node.node_id for n in nodes] == [d.id for d in expected]
    assert [n.node.node_id for n in await retriever.aretrieve("shock waves")] == [d.id for d in expected]


async def test_query_engine_with_postprocessor(cranfield_store, tiny_reranker):
    engine = RetrieverQueryEngine.from_args(
        RagRerankRetriever(cranfield_store, k=10),
        llm=MockLLM(),
        node_postprocessors=[RagRerank(reranker=tiny_reranker, top_n=3)],
    )
    response = engine.query("pressure distribution on a cone")
    assert len(response.source_nodes) == 3
    scores = [n.score for n in response.source_nodes]
    assert scores == sorted(scores, reverse=True)
    assert str(response)  # MockLLM echoes the prompt, which holds the reranked context
    assert response.source_nodes[0].node.get_content() in str(response)
    async_response = await engine.aquery("pressure distribution on a cone")
    assert [n.node.node_id for n in async_response.source_nodes] == [n.node.node_id for n in response.source_nodes]


def test_query_engine_answers_with_a_real_llm(cranfield_store, tiny_reranker, llama_server):
    """The same engine with LlamaIndex's OpenAILike over llama.cpp's server (SmolLM2): a generated answer."""
    from llama_index.llms.openai_like import OpenAILike

    llm = OpenAILike(
        model="smollm2-135m-instruct", api_base=llama_server, api_key="-", is_chat_model=True, max_tokens=48
    )
    engine = RetrieverQueryEngine.from_args(
        RagRerankRetriever(cranfield_store, k=10),
        llm=llm,
        node_postprocessors=[RagRerank(reranker=tiny_reranker, top_n=2)],
    )
    response = engine.query("pressure distribution on a cone")
    assert len(response.source_nodes) == 2 and len(str(response).split()) >= 3
    assert response.source_nodes[0].node.get_content() not in str(response)  # written, not the prompt echoed


async def test_text_that_is_not_valid_unicode_is_a_value_error_naming_it(cranfield_store, tiny_reranker):
    broken = [*NODES[:1], NodeWithScore(node=TextNode(text="a \ud800 wing", id_="x"), score=0.2)]
    with pytest.raises(ValueError, match="passage 1 is not valid Unicode"):
        RagRerank(reranker=tiny_reranker).postprocess_nodes(broken, query_str="wing")
    with pytest.raises(ValueError, match="query is not valid Unicode"):
        await RagRerank(reranker=tiny_reranker).apostprocess_nodes(NODES, query_str="wing \ud800")
    with pytest.raises(ValueError, match="query is not valid Unicode"):
        RagRerankRetriever(store=cranfield_store, reranker=tiny_reranker).retrieve("wing \ud800")


async def test_nan_scores_are_an_error_never_a_ranking(nan_reranker):
    from rag_rerank.inference.backend import NonFiniteOutput

    with pytest.raises(NonFiniteOutput, match="NaN or infinite logits"):
        RagRerank(reranker=nan_reranker).postprocess_nodes(NODES, query_str="wing")
    with pytest.raises(NonFiniteOutput, match="NaN or infinite logits"):
        await RagRerank(reranker=nan_reranker).apostprocess_nodes(NODES, query_str="wing")


async def test_each_rerank_emits_llama_index_rerank_events(tiny_reranker):
    """Instrumentation (Arize Phoenix, Langfuse...) listens for ReRankStartEvent/ReRankEndEvent, and
    LlamaDebugHandler for the RERANKING callback event, as LlamaIndex's own rerankers emit them."""
    from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler
    from llama_index.core.instrumentation import get_dispatcher
    from llama_index.core.instrumentation.event_handlers import BaseEventHandler
    from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent

    events = []

    class Collect(BaseEventHandler):
        def handle(self, event, **kwargs):
            if isinstance(event, (ReRankStartEvent, ReRankEndEvent)):
                events.append(event)

    collect, debug = Collect(), LlamaDebugHandler()
    root = get_dispatcher()
    root.add_event_handler(collect)
    try:
        rerank = RagRerank(reranker=tiny_reranker, top_n=2, callback_manager=CallbackManager([debug]))
        sync = rerank.postprocess_nodes(NODES, query_str="wing")
        asynchronous = await rerank.apostprocess_nodes(NODES, query_str="wing")
    finally:
        root.event_handlers.remove(collect)
    assert [type(e) for e in events] == [ReRankStartEvent, ReRankEndEvent] * 2
    start, end = events[:2]
    assert start.query.query_str == "wing" and start.top_n == 2 and len(start.nodes) == 4
    assert start.model_name == tiny_reranker.model_name
    assert [n.node.node_id for n in end.nodes] == [n.node.node_id for n in sync]
    assert [n.node.node_id for n in events[3].nodes] == [n.node.node_id for n in asynchronous]
    pairs = debug.get_event_pairs(CBEventType.RERANKING)
    assert len(pairs) == 2 and len(pairs[0][1].payload["nodes"]) == 2
