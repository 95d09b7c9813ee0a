"""Any rag-rerank reranker (cross-encoder or LLM) as a LangChain ``BaseDocumentCompressor``."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor
from langchain_core.documents import Document as LCDocument
from pydantic import ConfigDict

from langchain_rag_rerank._convert import reranked_scores, to_core, to_langchain
from rag_rerank import Document, Reranker, cut


class RagRerankCompressor(BaseDocumentCompressor):
    """Reorders documents by reranker score, best first.

    ``reranker`` is a ``CrossEncoderReranker``, ``PointwiseLLMReranker`` or
    ``ListwiseLLMReranker``. Each returned document carries ``metadata["relevance_score"]``
    (0..1, as langchain-cohere's: the reranker's score mapped by ``rag_rerank.relevance``),
    ``["rerank_score"]`` (the score as the reranker gave it) and ``["score_kind"]`` (what that
    is). With ``top_n=None`` and no ``threshold`` every input document comes back; ``top_n``
    keeps the best few (e.g. inside ``ContextualCompressionRetriever``), ``threshold`` drops
    documents whose ``relevance_score`` is below it.

    Example:
        .. code-block:: python

            from rag_rerank import CrossEncoderReranker
            from langchain_rag_rerank import RagRerankCompressor

            compressor = RagRerankCompressor(reranker=CrossEncoderReranker(), top_n=4)
            best = compressor.compress_documents(docs, "what is a slipstream?")
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    reranker: Reranker
    top_n: int | None = None
    threshold: float | None = None

    def compress_documents(
        self, documents: Sequence[LCDocument], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[LCDocument]:
        return self._kept(self.reranker.rerank(query, [to_core(doc) for doc in documents]))

    async def acompress_documents(
        self, documents: Sequence[LCDocument], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[LCDocument]:
        arerank = getattr(self.reranker, "arerank", None)
        if arerank is None:  # a local model: CPU/GPU-bound, run it off the event loop
            return await asyncio.to_thread(self.compress_documents, documents, query, callbacks)
        return self._kept(await arerank(query, [to_core(doc) for doc in documents]))

    def _kept(self, ranked: list[Document]) -> list[LCDocument]:
        kept = [to_langchain(doc, **reranked_scores(doc)) for doc in cut(ranked, self.top_n)]
        if self.threshold is None:
            return kept
        return [doc for doc in kept if doc.metadata["relevance_score"] >= self.threshold]
