"""Listwise LLM reranking (RankGPT): the LLM orders a window of passages, sliding from the back
of the list to the front."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from rag_rerank.document import Document
from rag_rerank.rerank.llm.base import LLMReranker
from rag_rerank.rerank.llm.cache import JudgementCache
from rag_rerank.rerank.llm.protocol import LLM, LLMCall, LLMRerankResult

log = logging.getLogger(__name__)


LISTWISE_PROMPT = """I will give you {count} passages, each marked with an identifier in brackets. \
Rank them by relevance to the search query, most relevant first.

Query: {query}

{passages}

Search query: {query}
Rank the {count} passages above by relevance. Answer only with the identifiers in order, \
e.g. [2] > [1] > [3], and nothing else."""


class ListwiseLLMReranker(LLMReranker):
    """RankGPT-style: the LLM orders a window of passages; the window slides from the
    bottom of the list to the top, ``step`` at a time, so the best candidates bubble up
    through overlapping windows and more candidates than fit one prompt get ranked.

    Documents get ``score = 1 - position / n`` (higher is better; kind "position"). Ids the LLM leaves out, repeats or
    invents are fallbacks: every document still comes back once (reported and logged).

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
        window: Passages per prompt.
        step: How far the window slides each time.
    """

    def __init__(
        self,
        llm: LLM,
        *,
        window: int = 20,
        step: int = 10,
        prompt: str = LISTWISE_PROMPT,
        max_passage_tokens: int = 200,
        timeout: float | None = 120.0,
        cache: JudgementCache | None = None,
        encoding: str | None = None,
    ):
        super().__init__(
            llm, prompt=prompt, max_passage_tokens=max_passage_tokens, timeout=timeout, cache=cache, encoding=encoding
        )
        if window < 2:
            raise ValueError(f"window must be at least 2, got {window}")
        if not 1 <= step <= window:
            raise ValueError(f"step must be between 1 and the window ({window}), got {step}")
        self.window, self.step = window, step

    def window_prompt(self, query: str, documents: Sequence[Document]) -> str:
        passages = "\n".join(f"[{i}] {self._clip(doc.text)}" for i, doc in enumerate(documents, start=1))
        return self.prompt.format(query=query, passages=passages, count=len(documents))

    def rerank_with_report(self, query: str, documents: Sequence[Document | str]) -> LLMRerankResult:
        order = self._documents(query, documents)
        calls: list[LLMCall] = []
        fallbacks: list[str] = []
        for start, end in windows(len(order), self.window, self.step):
            answer, call = self._ask(self.window_prompt(query, order[start:end]))
            calls.append(call)
            order[start:end] = self._apply(answer, call, order[start:end], start, fallbacks)
        return self._result(order, calls, fallbacks)

    async def arerank_with_report(self, query: str, documents: Sequence[Document | str]) -> LLMRerankResult:
        order = self._documents(query, documents)
        calls: list[LLMCall] = []
        fallbacks: list[str] = []
        for start, end in windows(len(order), self.window, self.step):  # each window depends on the last
            answer, call = await self._aask(self.window_prompt(query, order[start:end]))
            calls.append(call)
            order[start:end] = self._apply(answer, call, order[start:end], start, fallbacks)
        return self._result(order, calls, fallbacks)

    def _apply(
        self, answer: str | None, call: LLMCall, window_docs: list[Document], start: int, fallbacks: list[str]
    ) -> list[Document]:
        if answer is None:
            fallbacks.append(f"window {start}-{start + len(window_docs)}: {call.error}; order kept")
            return window_docs
        permutation, problems = parse_permutation(answer, len(window_docs))
        if problems:
            fallbacks.append(f"window {start}-{start + len(window_docs)}: {problems}")
        return [window_docs[i] for i in permutation]

    def _result(self, order: list[Document], calls: list[LLMCall], fallbacks: list[str]) -> LLMRerankResult:
        if fallbacks:
            log.warning("listwise LLM rerank fell back in %d window(s): %s", len(fallbacks), fallbacks[:3])
        n = len(order)
        return LLMRerankResult([doc.with_score(1 - i / n, "position") for i, doc in enumerate(order)], calls, fallbacks)


def windows(n: int, window: int, step: int) -> list[tuple[int, int]]:
    """The (start, end) windows, last window first, sliding up by ``step`` until the top is covered."""
    if n <= 1:
        return []  # nothing to order
    spans, end = [], n
    while True:
        start = max(0, end - window)
        spans.append((start, end))
        if start == 0:
            return spans
        end -= step


def parse_permutation(answer: str, count: int) -> tuple[list[int], str | None]:
    """0-based order from an answer like ``[3] > [1] > [2]``.

    Out-of-range and repeated ids are ignored, ids never mentioned follow in their
    previous order; the second value says what was wrong, or None.
    """
    numbers = [int(x) for x in re.findall(r"\[(\d+)\]", answer)] or [int(x) for x in re.findall(r"\b(\d+)\b", answer)]
    seen: list[int] = []
    problems = []
    out_of_range = [x for x in numbers if not 1 <= x <= count]
    repeated = len([x for x in numbers if 1 <= x <= count]) - len({x for x in numbers if 1 <= x <= count})
    for x in numbers:
        if 1 <= x <= count and x - 1 not in seen:
            seen.append(x - 1)
    missing = [i for i in range(count) if i not in seen]
    if not numbers:
        problems.append(f"no ids in answer {answer[:80]!r}; order kept")
    if out_of_range:
        problems.append(f"ids out of range ignored: {out_of_range[:10]}")
    if repeated:
        problems.append(f"{repeated} repeated id(s) ignored")
    if missing and numbers:
        problems.append(f"{len(missing)} id(s) not ranked, kept in previous order after the ranked ones")
    return seen + missing, "; ".join(problems) or None
