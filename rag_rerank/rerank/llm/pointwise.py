"""Pointwise LLM reranking: the LLM rates each passage on its own, 0 to 10."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from rag_rerank.document import Document
from rag_rerank.rerank.llm.base import LLMReranker, scored_first
from rag_rerank.rerank.llm.cache import JudgementCache
from rag_rerank.rerank.llm.protocol import LLM, LLMCall, LLMRerankResult

log = logging.getLogger(__name__)


POINTWISE_PROMPT = """Rate how relevant the passage is to the search query, on a scale from 0 (unrelated) \
to 10 (answers it completely). Reply with the number only.

Query: {query}

Passage: {passage}

Relevance (0-10):"""


class PointwiseLLMReranker(LLMReranker):
    """The LLM rates each passage 0-10 on its own; documents are sorted by rating.

    Ties keep their input order. A rating that cannot be parsed or lies outside 0-10 is
    a fallback: that document goes after the rated ones, in input order (reported and logged).

    Args:
        llm: Any object with ``model_name``, ``complete()`` and ``acomplete()``: wrap a LangChain
            chat model in ``langchain_rag_rerank.LangChainLLM``, a LlamaIndex LLM in
            ``llama_index.postprocessor.rag_rerank.LlamaIndexLLM``.
        prompt: The prompt template.
        max_passage_tokens: Each passage is cut to this many tokens in the prompt (marked in its
            metadata: ``truncated_by``).
        timeout: Seconds per LLM call (None: no limit); a call past it is a fallback.
        cache: Keep answers by (model, prompt), so that repeated comparisons do not pay twice.
        encoding: The tiktoken encoding that counts tokens (default: the model's, else cl100k_base).
        max_concurrency: LLM calls at once (threads for ``rerank``, tasks for ``arerank``).
    """

    def __init__(
        self,
        llm: LLM,
        *,
        prompt: str = POINTWISE_PROMPT,
        max_passage_tokens: int = 400,
        max_concurrency: int = 4,
        timeout: float | None = 60.0,
        cache: JudgementCache | None = None,
        encoding: str | None = None,
    ):
        super().__init__(
            llm, prompt=prompt, max_passage_tokens=max_passage_tokens, timeout=timeout, cache=cache, encoding=encoding
        )
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        self.max_concurrency = max_concurrency

    def prompts(self, query: str, documents: Sequence[Document]) -> list[str]:
        """The exact prompts sent, one per document (to inspect or to override ``prompt``)."""
        return [self.prompt.format(query=query, passage=self._clip(doc.text)) for doc in documents]

    def rerank_with_report(self, query: str, documents: Sequence[Document | str]) -> LLMRerankResult:
        docs = self._documents(query, documents)
        prompts = self.prompts(query, docs)
        with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
            answers = list(pool.map(self._ask, prompts))
        return self._combine(docs, answers)

    async def arerank_with_report(self, query: str, documents: Sequence[Document | str]) -> LLMRerankResult:
        docs = self._documents(query, documents)
        limit = asyncio.Semaphore(self.max_concurrency)

        async def one(prompt: str) -> tuple[str | None, LLMCall]:
            async with limit:
                return await self._aask(prompt)

        answers = await asyncio.gather(*(one(p) for p in self.prompts(query, docs)))
        return self._combine(docs, list(answers))

    def _combine(self, docs: list[Document], answers: list[tuple[str | None, LLMCall]]) -> LLMRerankResult:
        ratings: list[float | None] = []
        fallbacks = []
        for i, (answer, call) in enumerate(answers):
            rating, problem = parse_rating(answer) if answer is not None else (None, call.error)
            ratings.append(rating)
            if rating is None:
                fallbacks.append(f"document {i}: {problem}")
        ranked = scored_first(docs, ratings, "rating")
        if fallbacks:
            log.warning(
                "pointwise LLM rerank: %d of %d documents unrated: %s", len(fallbacks), len(docs), fallbacks[:3]
            )
        return LLMRerankResult(ranked, [call for _, call in answers], fallbacks)


_NUMBER = r"-?\d+(?:\.\d+)?"

_SCALE = re.compile(rf"\(?{_NUMBER}\s*(?:-|–|to)\s*{_NUMBER}\)?")  # "(0-10)", "0 to 10": the scale

_DENOMINATOR = re.compile(rf"(?:/|\bout of)\s*{_NUMBER}")  # "/10", "out of 10"


def parse_rating(answer: str, low: float = 0.0, high: float = 10.0) -> tuple[float | None, str | None]:
    """The rating in ``answer`` if it lies in [low, high]; else (None, the reason).

    LLMs echo the prompt's scale ("Relevance (0-10): 7", "7/10", "8 out of 10"): a scale or a
    denominator is not the rating. Of the numbers left, one after a colon or '=' wins, else the first.
    """
    text = _DENOMINATOR.sub(" ", _SCALE.sub(" ", answer))
    numbers = list(re.finditer(_NUMBER, text))
    if not numbers:
        return None, f"no rating in answer {answer[:80]!r}"
    labelled = [m for m in numbers if re.search(r"[:=]\s*$", text[: m.start()])]
    value = float((labelled or numbers)[0].group())
    if not low <= value <= high:
        return None, f"rating {value:g} outside {low:g}-{high:g}"
    return value, None
