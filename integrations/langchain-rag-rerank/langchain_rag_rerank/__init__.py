"""LangChain integration for rag-rerank."""

from langchain_rag_rerank.chains import build_rag_chain
from langchain_rag_rerank.compressors import RagRerankCompressor
from langchain_rag_rerank.embeddings import RagRerankEmbeddings
from langchain_rag_rerank.llms import LangChainLLM
from langchain_rag_rerank.retrievers import RagRerankRetriever

__version__ = "0.1.0"

__all__ = ["LangChainLLM", "RagRerankCompressor", "RagRerankEmbeddings", "RagRerankRetriever", "build_rag_chain"]
