"""The Chroma store's first stage (hybrid by default), optionally followed by a cross-encoder, as a LangChain retriever."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document as LCDocument
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from langchain_rag_rerank._convert import reranked_scores, to_langchain
from rag_rerank import ChromaStore, Reranker, two_stage_search


class RagRerankRetriever(BaseRetriever):
    """Two-stage retrieval: ``fetch_k`` candidates from Chroma, reranked, best ``k`` returned.

    The first stage is ``mode``: ``"hybrid"`` (BM25 and the bi-encoder fused, default),
    ``"dense"`` or ``"lexical"``. Each source document comes back once, as its best chunk
    (``chunks=True`` for raw chunks). Without a ``reranker`` it returns the first stage's
    top ``k``. Documents carry ``metadata["retrieval_score"]`` (the first stage's score) and,
    when reranked, ``metadata["relevance_score"]`` (0..1), ``["rerank_score"]`` and ``["score_kind"]``. ``k`` and ``where`` (a Chroma metadata filter) can
    also be given per call: ``retriever.invoke("question", k=3)``.

    Example:
        .. code-block:: python

            from rag_rerank import ChromaStore, CrossEncoderReranker
            from langchain_rag_rerank import RagRerankRetriever

            retriever = RagRerankRetriever(
                store=ChromaStore("docs"), reranker=CrossEncoderReranker(), k=4, fetch_k=100
            )
            docs = retriever.invoke("what is a slipstream?")
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    store: ChromaStore
    reranker: Reranker | None = None
    k: int = 4
    fetch_k: int = 100
    where: dict[str, Any] | None = None
    mode: Literal["hybrid", "dense", "lexical"] = "hybrid"
    chunks: bool = False

    def _search(self, query: str, k: int | None, where: dict[str, Any] | None) -> list[LCDocument]:
        hits = two_stage_search(
            self.store,
            query,
            k=self.k if k is None else k,
            reranker=self.reranker,
            fetch_k=self.fetch_k,
            where=self.where if where is None else where,
            mode=self.mode,
            chunks=self.chunks,
        )
        if self.reranker is None:
            return [to_langchain(doc, retrieval_score=retrieval) for doc, retrieval in hits]
        return [to_langchain(doc, retrieval_score=retrieval, **reranked_scores(doc)) for doc, retrieval in hits]

    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        k: int | None = None,
        where: dict[str, Any] | None = None,
    ) -> list[LCDocument]:
        return self._search(query, k, where)

    async def _aget_relevant_documents(
        self,
        query: str,
        *,
        run_manager: AsyncCallbackManagerForRetrieverRun,
        k: int | None = None,
        where: dict[str, Any] | None = None,
    ) -> list[LCDocument]:
        return await asyncio.to_thread(self._search, query, k, where)
