from llama_index.postprocessor.rag_rerank.base import RagRerank

__all__ = ["RagRerank"]
