"""LLM reranking with LlamaIndex LLMs, the context budget, and a streaming query engine."""

from __future__ import annotations

import re

import pytest
from llama_index.core.llms import CompletionResponse, CustomLLM, LLMMetadata
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.llms.mock import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import NodeWithScore, TextNode
from llama_index.postprocessor.rag_rerank import ContextBudget, LlamaIndexLLM, RagRerank
from llama_index.retrievers.rag_rerank import RagRerankRetriever

from rag_rerank import ListwiseLLMReranker, PointwiseLLMReranker

NODES = [
    NodeWithScore(node=TextNode(text=f"passage {i} " + "word " * 30, id_=f"n{i}"), score=1.0 - i / 10) for i in range(6)
]


class JudgeLLM(CustomLLM):
    """A deterministic LlamaIndex LLM: rates the passage about 'passage 3' 9 and others 2;
    answers a listwise window by reversing it. A reranker that ignored it would fail."""

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="judge")

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs) -> CompletionResponse:
        if "Rank the" in prompt:
            ids = re.findall(r"^\[(\d+)\]", prompt, re.MULTILINE)
            return CompletionResponse(text=" > ".join(f"[{i}]" for i in reversed(ids)))
        return CompletionResponse(text="9" if "passage 3 " in prompt.split("Passage:")[1] else "2")

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs):
        yield self.complete(prompt)


async def test_llm_rerankers_with_a_llama_index_llm_follow_its_answers():
    llm = LlamaIndexLLM(JudgeLLM())
    assert llm.model_name == "judge"
    expected = {
        "pointwise": ["n3", "n0", "n1", "n2", "n4", "n5"],  # the 9 first, the ties in input order
        "listwise": ["n4", "n5", "n1", "n0", "n3", "n2"],  # windows (2,6) then (0,4), each reversed
    }
    for name, reranker in (
        ("pointwise", PointwiseLLMReranker(llm)),
        ("listwise", ListwiseLLMReranker(llm, window=4, step=2)),
    ):
        out = RagRerank(reranker=reranker).postprocess_nodes(NODES, query_str="passage")
        assert [n.node.node_id for n in out] == expected[name], name
        out_async = await RagRerank(reranker=reranker).apostprocess_nodes(NODES, query_str="passage")
        assert [n.node.node_id for n in out_async] == expected[name], name


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
