"""Fit reranked nodes into a token budget, optionally best-at-the-edges, before synthesis."""

from __future__ import annotations

from typing import Literal

from llama_index.core.bridge.pydantic import Field
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

from rag_rerank import Document, pack_context


class ContextBudget(BaseNodePostprocessor):
    """Keeps nodes in rank order while they fit in ``max_tokens`` (tiktoken), then orders
    them ``"rank"`` or ``"edges"`` (best first and last, weakest in the middle).

    Put it after ``RagRerank`` in ``node_postprocessors``.
    """

    max_tokens: int = Field(default=3000, description="Token budget for the context.")
    order: Literal["rank", "edges"] = Field(default="rank")
    encoding_model: str | None = Field(default=None, description="Model whose tiktoken encoding counts tokens.")

    @classmethod
    def class_name(cls) -> str:
        return "ContextBudget"

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        documents = [
            Document(text=n.node.get_content(metadata_mode=MetadataMode.LLM), id=str(i)) for i, n in enumerate(nodes)
        ]
        packed = pack_context(
            documents, max_tokens=self.max_tokens, model=self.encoding_model, order=self.order, numbered=False
        )
        return [nodes[int(doc.id)] for doc in packed.documents]
