"""Any rag-rerank reranker (cross-encoder or LLM) as a LangChain ``BaseDocumentCompressor``."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor
from langchain_core.documents import Document as LCDocument
from pydantic import ConfigDict

from langchain_rag_rerank._convert import to_core, to_langchain
from rag_rerank import Document, Reranker, cut


class RagRerankCompressor(BaseDocumentCompressor):
    """Reorders documents by reranker score, best first.

    ``reranker`` is a ``CrossEncoderReranker``, ``PointwiseLLMReranker`` or
    ``ListwiseLLMReranker``. Each returned document carries ``metadata["relevance_score"]``.
    With ``top_n=None`` and no ``threshold`` every input document comes back; use
    ``top_n`` to keep the best few (e.g. inside ``ContextualCompressionRetriever``).

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
        return [to_langchain(doc, relevance_score=doc.score) for doc in cut(ranked, self.top_n, self.threshold)]
