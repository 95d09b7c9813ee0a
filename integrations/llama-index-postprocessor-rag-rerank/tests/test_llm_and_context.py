"""LLM reranking with LlamaIndex LLMs, the context budget, and a streaming query engine."""

from __future__ import annotations

import pytest
from llama_index.core.llms.mock import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import NodeWithScore, TextNode
from llama_index.postprocessor.rag_rerank import ContextBudget, LlamaIndexLLM, RagRerank
from llama_index.retrievers.rag_rerank import RagRerankRetriever

from rag_rerank import ListwiseLLMReranker, PointwiseLLMReranker

NODES = [
    NodeWithScore(node=TextNode(text=f"passage {i} " + "word " * 30, id_=f"n{i}"), score=1.0 - i / 10) for i in range(6)
]


async def test_llm_rerankers_with_a_llama_index_llm_return_every_node():
    llm = LlamaIndexLLM(MockLLM())  # echoes the prompt: every rating parses as 0, a tie
    assert llm.model_name
    for reranker in (PointwiseLLMReranker(llm), ListwiseLLMReranker(llm, window=4, step=2)):
        out = RagRerank(reranker=reranker).postprocess_nodes(NODES, query_str="passage")
        assert sorted(n.node.node_id for n in out) == sorted(n.node.node_id for n in NODES)
        out_async = await RagRerank(reranker=reranker).apostprocess_nodes(NODES, query_str="passage")
        assert [n.node.node_id for n in out_async] == [n.node.node_id for n in out]


def test_context_budget_keeps_rank_order_within_budget_and_can_reorder_edges():
    from rag_rerank import count_tokens

    kept = ContextBudget(max_tokens=100).postprocess_nodes(NODES)
    assert 1 <= len(kept) < len(NODES) and [n.node.node_id for n in kept] == [
        n.node.node_id for n in NODES[: len(kept)]
    ]
    assert count_tokens("\n\n".join(n.node.get_content() for n in kept)) <= 100
    assert count_tokens("\n\n".join(n.node.get_content() for n in NODES[: len(kept) + 1])) > 100
    edges = ContextBudget(max_tokens=10_000, order="edges").postprocess_nodes(NODES)
    assert [n.node.node_id for n in edges] == ["n0", "n2", "n4", "n5", "n3", "n1"]


def test_unwrapped_llm_gets_a_clear_error():
    with pytest.raises(TypeError, match="LlamaIndexLLM"):
        PointwiseLLMReranker(MockLLM())


def test_streaming_query_engine_with_rerank_and_budget(cranfield_store, tiny_reranker):
    engine = RetrieverQueryEngine.from_args(
        RagRerankRetriever(cranfield_store, k=10),
        llm=MockLLM(max_tokens=12),
        node_postprocessors=[RagRerank(reranker=tiny_reranker, top_n=5), ContextBudget(max_tokens=300, order="edges")],
        streaming=True,
    )
    response = engine.query("pressure distribution on a cone")
    pieces = list(response.response_gen)
    assert len(pieces) > 1 and "".join(pieces).strip()
    assert 1 <= len(response.source_nodes) <= 5
