from llama_index.retrievers.rag_rerank.base import RagRerankRetriever

__all__ = ["RagRerankRetriever"]
