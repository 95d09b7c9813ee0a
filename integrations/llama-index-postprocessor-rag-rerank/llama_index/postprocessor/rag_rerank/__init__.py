from llama_index.postprocessor.rag_rerank.base import RagRerank
from llama_index.postprocessor.rag_rerank.context import ContextBudget
from llama_index.postprocessor.rag_rerank.llm import LlamaIndexLLM

__version__ = "0.1.0"

__all__ = ["ContextBudget", "LlamaIndexLLM", "RagRerank"]
