"""The rag-rerank Chroma store's first stage (hybrid by default), optionally followed by a cross-encoder, as a LlamaIndex retriever."""

from __future__ import annotations

import asyncio
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks import CallbackManager
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from rag_rerank import ChromaStore, Document, Reranker, relevance, two_stage_search
from rag_rerank.retrieval.store import Mode


class RagRerankRetriever(BaseRetriever):
    """Two-stage retrieval: ``fetch_k`` candidates from Chroma, reranked, best ``k`` returned.

    The first stage is ``mode``: ``"hybrid"`` (BM25 and the bi-encoder fused, default),
    ``"dense"`` or ``"lexical"``. Each source document comes back once, as its best chunk
    (``chunks=True`` for raw chunks). Without a ``reranker`` it returns the first stage's top
    ``k``. ``NodeWithScore.score`` is the reranker's score on a 0..1 scale when reranked
    (``rag_rerank.relevance``), else the first stage's; the first stage's is also kept in
    ``node.metadata["retrieval_score"]``, and ``["score_kind"]`` says what the score is.

    Example:
        .. code-block:: python

            from rag_rerank import ChromaStore, CrossEncoderReranker
            from llama_index.retrievers.rag_rerank import RagRerankRetriever
            from llama_index.core.query_engine import RetrieverQueryEngine

            retriever = RagRerankRetriever(ChromaStore("docs"), reranker=CrossEncoderReranker(), k=4)
            engine = RetrieverQueryEngine.from_args(retriever, llm=my_llm)
    """

    def __init__(
        self,
        store: ChromaStore,
        *,
        reranker: Reranker | None = None,
        k: int = 4,
        fetch_k: int = 100,
        where: dict[str, Any] | None = None,
        mode: Mode = "hybrid",
        chunks: bool = False,
        callback_manager: CallbackManager | None = None,
    ):
        if k < 1 or fetch_k < 1:
            raise ValueError(f"k and fetch_k must be positive, got k={k}, fetch_k={fetch_k}")
        self.store, self.reranker, self.k, self.fetch_k, self.where = store, reranker, k, fetch_k, where
        self.mode, self.chunks = mode, chunks
        super().__init__(callback_manager=callback_manager)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        hits = two_stage_search(
            self.store,
            query_bundle.query_str,
            k=self.k,
            reranker=self.reranker,
            fetch_k=self.fetch_k,
            where=self.where,
            mode=self.mode,
            chunks=self.chunks,
        )
        return [_node(doc, retrieval, reranked=self.reranker is not None) for doc, retrieval in hits]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await asyncio.to_thread(self._retrieve, query_bundle)


_BOOKKEEPING = {
    "retrieval_score",
    "score_kind",
    "source_id",
    "chunk_index",
    "chunk_count",
    "chunk_id",
    "char_start",
    "char_end",
    "dense_score",
    "lexical_score",
}


def _node(doc: Document, retrieval_score: float | None, reranked: bool) -> NodeWithScore:
    metadata = {**doc.metadata, "retrieval_score": retrieval_score, "score_kind": doc.score_kind}
    node = TextNode(
        id_=doc.id,
        text=doc.text,
        metadata=metadata,
        # Scores and bookkeeping are for the application, not for the LLM prompt.
        excluded_llm_metadata_keys=[key for key in metadata if key in _BOOKKEEPING],
        excluded_embed_metadata_keys=list(metadata),
    )
    score = relevance(doc.score or 0.0, doc.score_kind) if reranked else doc.score
    return NodeWithScore(node=node, score=score)
