"""A LangChain chat model as the ``LLM`` that rag-rerank's LLM rerankers call."""

from __future__ import annotations

from langchain_core.language_models import BaseLanguageModel


class LangChainLLM:
    """Wraps any LangChain chat model (ChatOpenAI, ChatOllama, ...) for LLM reranking.

    Example:
        .. code-block:: python

            from langchain_openai import ChatOpenAI
            from rag_rerank import ListwiseLLMReranker
            from langchain_rag_rerank import LangChainLLM

            llm = LangChainLLM(ChatOpenAI(model="gpt-4o-mini"))
            reranker = ListwiseLLMReranker(llm, window=20, step=10)
    """

    def __init__(self, model: BaseLanguageModel):
        if not isinstance(model, BaseLanguageModel):
            raise TypeError(f"expected a LangChain chat model or LLM, got {type(model).__name__}")
        self.model = model
        self.model_name = str(
            getattr(model, "model_name", None) or getattr(model, "model", None) or type(model).__name__
        )

    def complete(self, prompt: str) -> str:
        return _text(self.model.invoke(prompt))

    async def acomplete(self, prompt: str) -> str:
        return _text(await self.model.ainvoke(prompt))


def _text(output: object) -> str:
    """A chat model answers with a message; its content may be a string or content blocks."""
    content = getattr(output, "content", output)
    if isinstance(content, list):
        return "".join(block if isinstance(block, str) else str(block.get("text", "")) for block in content)
    return str(content)


__all__ = ["LangChainLLM"]
