"""A rag-rerank cross-encoder as a LlamaIndex node postprocessor."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.callbacks import CBEventType, EventPayload
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

from rag_rerank import Document, Reranker, cut, relevance

dispatcher = get_dispatcher(__name__)


class RagRerank(BaseNodePostprocessor):
    """Reorders nodes by reranker score and sets ``NodeWithScore.score`` to it on a 0..1 scale
    (``rag_rerank.relevance``: a cross-encoder logit through the sigmoid, an LLM rating over 10).

    ``reranker`` is a ``CrossEncoderReranker``, ``PointwiseLLMReranker`` or
    ``ListwiseLLMReranker``. With ``top_n=None`` and no ``threshold`` every node comes
    back, reordered. Like LlamaIndex's own rerankers, it emits ``ReRankStartEvent`` and
    ``ReRankEndEvent`` (instrumentation) and a ``RERANKING`` callback event around each rerank.

    Example:
        .. code-block:: python

            from rag_rerank import CrossEncoderReranker
            from llama_index.postprocessor.rag_rerank import RagRerank

            rerank = RagRerank(reranker=CrossEncoderReranker(), top_n=4)
            engine = index.as_query_engine(similarity_top_k=50, node_postprocessors=[rerank])
    """

    top_n: int | None = Field(default=None, description="Keep the best n nodes; None keeps all.")
    threshold: float | None = Field(default=None, description="Drop nodes whose 0..1 score is below this.")
    metadata_mode: MetadataMode = Field(
        default=MetadataMode.NONE, description="Which metadata the cross-encoder reads with the text."
    )
    _reranker: Reranker = PrivateAttr()

    def __init__(self, reranker: Reranker, **kwargs: Any):
        super().__init__(**kwargs)
        self._reranker = reranker

    @classmethod
    def class_name(cls) -> str:
        return "RagRerank"

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        query, documents = self._inputs(nodes, query_bundle)
        with self._events(nodes, query_bundle) as done:
            return done(self._outputs(nodes, self._reranker.rerank(query, documents)))

    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        arerank = getattr(self._reranker, "arerank", None)
        if arerank is None:  # a local model: CPU/GPU-bound, run it off the event loop
            return await asyncio.to_thread(self._postprocess_nodes, nodes, query_bundle)
        query, documents = self._inputs(nodes, query_bundle)
        with self._events(nodes, query_bundle) as done:
            return done(self._outputs(nodes, await arerank(query, documents)))

    @contextmanager
    def _events(self, nodes: list[NodeWithScore], query: QueryBundle | None) -> Iterator[Any]:
        """LlamaIndex's rerank events around one rerank; the block hands its nodes to ``done``."""
        model = str(getattr(self._reranker, "model_name", type(self._reranker).__name__))
        top_n = self.top_n if self.top_n is not None else len(nodes)
        dispatcher.event(ReRankStartEvent(query=query, nodes=nodes, top_n=top_n, model_name=model))
        payload = {EventPayload.NODES: nodes, EventPayload.MODEL_NAME: model, EventPayload.TOP_K: top_n}
        if query is not None:
            payload[EventPayload.QUERY_STR] = query.query_str
        returned: list[NodeWithScore] = []

        def done(reranked: list[NodeWithScore]) -> list[NodeWithScore]:
            returned.extend(reranked)
            return reranked

        with self.callback_manager.event(CBEventType.RERANKING, payload=payload) as event:
            yield done
            event.on_end(payload={EventPayload.NODES: returned})
        dispatcher.event(ReRankEndEvent(nodes=returned))

    def _inputs(self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None) -> tuple[str, list[Document]]:
        if query_bundle is None:
            raise ValueError("RagRerank needs the query: pass query_bundle (or query_str) to postprocess_nodes")
        texts = [n.node.get_content(metadata_mode=self.metadata_mode) for n in nodes]
        return query_bundle.query_str, [Document(text=text, id=str(i)) for i, text in enumerate(texts)]

    def _outputs(self, nodes: list[NodeWithScore], ranked: list[Document]) -> list[NodeWithScore]:
        scored = [
            NodeWithScore(node=nodes[int(doc.id)].node, score=relevance(doc.score or 0.0, doc.score_kind))
            for doc in cut(ranked, self.top_n)
        ]
        return [n for n in scored if self.threshold is None or (n.score or 0.0) >= self.threshold]
