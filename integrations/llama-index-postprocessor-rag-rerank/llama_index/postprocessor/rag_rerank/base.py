"""A rag-rerank cross-encoder as a LlamaIndex node postprocessor."""

from __future__ import annotations

import asyncio
from typing import Any

from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
from rag_rerank import CrossEncoderReranker, Document


class RagRerank(BaseNodePostprocessor):
    """Reorders nodes by cross-encoder score and sets ``NodeWithScore.score`` to it.

    With ``top_n=None`` and no ``threshold`` every node comes back, reordered.

    Example:
        .. code-block:: python

            from rag_rerank import CrossEncoderReranker
            from llama_index.postprocessor.rag_rerank import RagRerank

            rerank = RagRerank(reranker=CrossEncoderReranker(), top_n=4)
            engine = index.as_query_engine(similarity_top_k=50, node_postprocessors=[rerank])
    """

    top_n: int | None = Field(default=None, description="Keep the best n nodes; None keeps all.")
    threshold: float | None = Field(default=None, description="Drop nodes scoring below this.")
    metadata_mode: MetadataMode = Field(
        default=MetadataMode.NONE, description="Which metadata the cross-encoder reads with the text."
    )
    _reranker: CrossEncoderReranker = PrivateAttr()

    def __init__(self, reranker: CrossEncoderReranker, **kwargs: Any):
        super().__init__(**kwargs)
        self._reranker = reranker

    @classmethod
    def class_name(cls) -> str:
        return "RagRerank"

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if query_bundle is None:
            raise ValueError("RagRerank needs the query: pass query_bundle (or query_str) to postprocess_nodes")
        documents = [
            Document(text=n.node.get_content(metadata_mode=self.metadata_mode), id=str(i)) for i, n in enumerate(nodes)
        ]
        ranked = self._reranker.rerank(query_bundle.query_str, documents, top_n=self.top_n, threshold=self.threshold)
        return [NodeWithScore(node=nodes[int(doc.id)].node, score=doc.score) for doc in ranked]

    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        return await asyncio.to_thread(self._postprocess_nodes, nodes, query_bundle)
