"""Pointwise yes/no reranking: the LLM reads the query and a passage and answers whether the passage
is relevant; the score is log P("yes") - log P("no") of its first answer token (no text is parsed)."""

from __future__ import annotations

from typing import Any

from rag_rerank.rerank.llm.logprob import LogprobReranker
from rag_rerank.rerank.llm.protocol import ScoringLLM

YES_NO_PROMPT = """Passage: {passage}

Query: {query}

Does the passage answer the query? Answer Yes or No.
Answer:"""


class YesNoLLMReranker(LogprobReranker):
    """Ranks by the log-odds of "yes" against "no" (kind ``logit``: ``relevance`` maps it to P(yes)).

    Args:
        llm: A ``ScoringLLM``: ``TransformersLM`` (an instruction-tuned model reads best:
            ``smollm2-135m-instruct``) or ``OpenAIServerLLM`` over a server with chat ``top_logprobs``.
        prompt: The template, with ``{query}`` and ``{passage}``.
        labels: The two answers compared, the relevant one first.
        options: ``max_passage_tokens``, ``timeout`` (for the whole rerank), ``cache``, ``encoding``,
            ``batch_size``: as ``LogprobReranker`` takes them.
    """

    name = "yes-no"

    def __init__(
        self,
        llm: ScoringLLM,
        *,
        prompt: str = YES_NO_PROMPT,
        labels: tuple[str, str] = ("yes", "no"),
        **options: Any,
    ):
        if "{passage}" not in prompt or "{query}" not in prompt:
            raise ValueError("the yes/no prompt needs {query} and {passage} fields")
        super().__init__(llm, prompt=prompt, **options)
        self.labels = labels

    def _score(self, query: str, prompts: list[str]) -> list[float]:
        return [yes - no for yes, no in self.llm.label_logprobs(prompts, list(self.labels))]
