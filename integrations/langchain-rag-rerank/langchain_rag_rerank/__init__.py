"""LangChain integration for rag-rerank."""

from langchain_rag_rerank.compressors import RagRerankCompressor
from langchain_rag_rerank.embeddings import RagRerankEmbeddings
from langchain_rag_rerank.retrievers import RagRerankRetriever

__all__ = ["RagRerankCompressor", "RagRerankEmbeddings", "RagRerankRetriever"]
