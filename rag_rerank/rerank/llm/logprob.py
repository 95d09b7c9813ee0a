"""What the rerankers that read probabilities share (query likelihood, yes/no): one query's pairs
scored in batches, cached per (model, prompt), stopped at a deadline with the first-stage order
kept for what was not scored; a server's requests wait no longer than what is left of it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from rag_rerank.document import Document
from rag_rerank.inference.llm.openai_server import ServerBusy, deadline
from rag_rerank.rerank.llm.base import LLMReranker, model_key, scored_first
from rag_rerank.rerank.llm.cache import JudgementCache
from rag_rerank.rerank.llm.protocol import LLMCall, LLMRerankResult, ScoringLLM

log = logging.getLogger(__name__)

BATCH_SIZE = 8  # pairs per call: the deadline is checked between calls, and bounds a server's requests
# A batch's failures that a later call may not meet (the deadline passing inside one is a TimeoutError);
# any other failure is raised
PASSING = (TimeoutError, ConnectionResetError, ServerBusy)


class LogprobReranker(LLMReranker):
    """Scores each (query, document) pair from a ``ScoringLLM``'s probabilities; subclasses say how.

    Args:
        llm: A ``ScoringLLM`` (``TransformersLM``, ``OpenAIServerLLM``).
        prompt: The template, with ``{passage}`` (and ``{query}`` where the reranker reads it there).
        max_passage_tokens: Each passage is cut to this many tokens (marked: ``truncated_by``).
        timeout: Seconds for the whole rerank (None: no limit). No batch starts after it has passed;
            the documents left keep their first-stage order below the scored ones, reported as
            fallbacks. A model in this process finishes the batch it is running; a server's requests
            (``OpenAIServerLLM``) are bounded by what is left of it (``openai_server.deadline``), so
            the batch they serve is cut short at the deadline and falls back too. So does a batch that
            fails in a way a later call may not (``PASSING``: a timeout, a reset connection, a busy
            server); any other failure is raised.
        cache: Keeps each pair's score by (model, prompt, query).
        encoding: The tiktoken encoding that counts and cuts passages (default cl100k_base).
        batch_size: Pairs per call to the model.
    """

    kind = "logit"  # the ``score_kind`` of the scores given
    name = "logprob"  # in the cache's keys and the reports

    def __init__(
        self,
        llm: ScoringLLM,
        *,
        prompt: str,
        max_passage_tokens: int = 256,
        timeout: float | None = 120.0,
        cache: JudgementCache | None = None,
        encoding: str | None = None,
        batch_size: int = BATCH_SIZE,
    ):
        super().__init__(
            llm, prompt=prompt, max_passage_tokens=max_passage_tokens, timeout=timeout, cache=cache, encoding=encoding
        )
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.batch_size = batch_size

    def _check(self, llm: object) -> None:
        if not isinstance(llm, ScoringLLM):
            raise TypeError(
                f"llm is a {type(llm).__name__}, which gives no probabilities; use a local model "
                "(rag_rerank.inference.llm.transformers_lm.TransformersLM('gemma-3-270m')) or an OpenAI-compatible "
                "server (rag_rerank.inference.llm.openai_server.OpenAIServerLLM(url)), or an object with "
                "model_name, continuation_logprobs() and label_logprobs()"
            )

    def prompts(self, query: str, documents: Sequence[Document]) -> list[str]:
        """The exact prompts scored, one per document."""
        return [self.prompt.format(query=query, passage=self._clip(doc.text)) for doc in documents]

    def _score(self, query: str, prompts: list[str]) -> list[float]:
        """One score per prompt (one batch)."""
        raise NotImplementedError

    def _final(self, documents: list[Document], scores: list[float | None]) -> list[float | None]:
        """The scores the documents are ranked by (the query-likelihood reranker fuses them)."""
        return scores

    def rerank_with_report(self, query: str, documents: Sequence[Document | str]) -> LLMRerankResult:
        docs = self._documents(query, documents)
        scores, calls, fallbacks = self._scores(query, self.prompts(query, docs))
        if fallbacks:
            log.warning("%s LLM rerank fell back: %s", self.name, fallbacks[:3])
        return LLMRerankResult(scored_first(docs, self._final(docs, scores), self.kind), calls, fallbacks)

    async def arerank_with_report(self, query: str, documents: Sequence[Document | str]) -> LLMRerankResult:
        return await asyncio.to_thread(self.rerank_with_report, query, documents)

    def _scores(self, query: str, prompts: list[str]) -> tuple[list[float | None], list[LLMCall], list[str]]:
        started = time.perf_counter()
        keys = [f"{self.name}\x1f{query}\x1f{prompt}" for prompt in prompts]
        scores: list[float | None] = [self._cached(key) for key in keys]
        calls = [LLMCall(self._tokens(prompts[i]), 0, 0.0, cached=True) for i, s in enumerate(scores) if s is not None]
        todo = [i for i, s in enumerate(scores) if s is None]
        fallbacks: list[str] = []
        with deadline(self.timeout):  # an OpenAIServerLLM's requests wait no longer than what is left
            for start in range(0, len(todo), self.batch_size):
                rows = todo[start : start + self.batch_size]
                if self.timeout is not None and time.perf_counter() - started > self.timeout:
                    fallbacks.append(
                        f"{len(todo) - start} document(s) not scored within {self.timeout}s; first-stage order"
                    )
                    break
                began = time.perf_counter()
                try:
                    values = self._score(query, [prompts[i] for i in rows])
                except PASSING as error:  # may not happen again: this batch keeps its first-stage order, reported
                    fallbacks.append(f"documents {rows}: {type(error).__name__}: {error}; first-stage order")
                    continue
                # anything else (a model without logits_to_keep, out of memory, non-finite output, a refused
                # connection, ScoringUnsupported) fails every batch alike: an error, never a ranking that looks real
                seconds = (time.perf_counter() - began) / len(rows)
                for i, value in zip(rows, values):
                    scores[i] = value
                    calls.append(LLMCall(self._tokens(prompts[i]), 0, seconds))
                    if self.cache is not None:
                        self.cache.put(model_key(self.llm), keys[i], repr(value))
        return scores, calls, fallbacks

    def _cached(self, key: str) -> float | None:
        answer = self.cache.get(model_key(self.llm), key) if self.cache is not None else None
        return float(answer) if answer is not None else None
