"""An LCEL chain: retrieve, rerank, pack the best passages into a token budget, answer."""

from __future__ import annotations

from typing import Literal

from langchain_core.documents import Document as LCDocument
from langchain_core.language_models import BaseLanguageModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnableLambda, RunnablePassthrough

from langchain_rag_rerank._convert import to_core
from rag_rerank import RAG_PROMPT, pack_context


def build_rag_chain(
    retriever: BaseRetriever,
    llm: BaseLanguageModel,
    *,
    max_context_tokens: int = 3000,
    order: Literal["rank", "edges"] = "rank",
    prompt: str = RAG_PROMPT,
    encoding_model: str | None = None,
) -> Runnable[str, str]:
    """``question -> answer``: the retriever's documents (best first) become numbered
    sources [1], [2], ... within ``max_context_tokens`` (tiktoken, ``encoding_model``'s
    encoding), optionally best-at-the-edges, and the LLM answers citing them.
    ``.stream(question)`` streams the answer where the model streams.

    Example:
        .. code-block:: python

            chain = build_rag_chain(RagRerankRetriever(store=store, reranker=reranker, k=6), chat_model)
            for piece in chain.stream("what is a slipstream?"):
                print(piece, end="")
    """

    def format_sources(documents: list[LCDocument]) -> str:
        packed = pack_context(
            [to_core(doc) for doc in documents], max_tokens=max_context_tokens, model=encoding_model, order=order
        )
        return packed.text

    return (
        {"context": retriever | RunnableLambda(format_sources), "question": RunnablePassthrough()}
        | ChatPromptTemplate.from_template(prompt)
        | llm
        | StrOutputParser()
    )
