"""The rag-rerank bi-encoder as LangChain ``Embeddings``."""

from __future__ import annotations

from langchain_core.embeddings import Embeddings

from rag_rerank import DEFAULT_BI_ENCODER, BiEncoder


class RagRerankEmbeddings(Embeddings):
    """Normalised sentence-transformers embeddings (dot product = cosine similarity).

    Example:
        .. code-block:: python

            from langchain_rag_rerank import RagRerankEmbeddings

            embeddings = RagRerankEmbeddings()  # sentence-transformers/all-MiniLM-L6-v2
            vector = embeddings.embed_query("what is a slipstream?")
    """

    def __init__(self, model: str = DEFAULT_BI_ENCODER, *, device: str | None = None, batch_size: int = 64):
        self.bi_encoder = BiEncoder(model, device=device, batch_size=batch_size)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.bi_encoder.embed_documents(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.bi_encoder.embed_query(text).tolist()
