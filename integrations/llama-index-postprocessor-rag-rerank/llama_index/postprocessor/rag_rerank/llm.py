"""A LlamaIndex LLM as the ``LLM`` that rag-rerank's LLM rerankers call."""

from __future__ import annotations

from llama_index.core.base.llms.base import BaseLLM


class LlamaIndexLLM:
    """Wraps any LlamaIndex LLM (OpenAI, Ollama, OpenAILike, ...) for LLM reranking.

    Example:
        .. code-block:: python

            from llama_index.llms.ollama import Ollama
            from rag_rerank import PointwiseLLMReranker
            from llama_index.postprocessor.rag_rerank import LlamaIndexLLM, RagRerank

            reranker = PointwiseLLMReranker(LlamaIndexLLM(Ollama(model="llama3.1")))
            postprocessor = RagRerank(reranker=reranker, top_n=4)
    """

    def __init__(self, llm: BaseLLM):
        if not isinstance(llm, BaseLLM):
            raise TypeError(f"expected a LlamaIndex LLM, got {type(llm).__name__}")
        self.llm = llm
        self.model_name = str(llm.metadata.model_name)

    def complete(self, prompt: str) -> str:
        return self.llm.complete(prompt).text

    async def acomplete(self, prompt: str) -> str:
        return (await self.llm.acomplete(prompt)).text
