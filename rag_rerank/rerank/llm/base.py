"""What every LLM reranker shares: checks, prompt truncation, token counting, the cache and timeouts."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

from rag_rerank.document import Document, as_documents, check_unicode, mark_truncated
from rag_rerank.rerank.base import check_query
from rag_rerank.rerank.llm.cache import JudgementCache
from rag_rerank.rerank.llm.protocol import LLM, LLMCall, LLMRerankResult, _call_with_timeout
from rag_rerank.retrieval.chunking import encoding_for, get_encoding

log = logging.getLogger(__name__)


class LLMReranker:
    """Shared plumbing: prompt truncation, token counting, cache, timeouts."""

    def __init__(
        self,
        llm: Any,
        *,
        prompt: str,
        max_passage_tokens: int,
        timeout: float | None,
        cache: JudgementCache | None,
        encoding: str | None,
    ):
        self._check(llm)
        self.llm = llm
        self.prompt = prompt
        self.max_passage_tokens = max_passage_tokens
        self.timeout = timeout
        self.cache = cache
        self._encoding = get_encoding(encoding or encoding_for(llm.model_name))

    def _check(self, llm: object) -> None:
        if not isinstance(llm, LLM):
            raise TypeError(
                f"llm is a {type(llm).__name__}; wrap it first: langchain_rag_rerank.LangChainLLM(chat_model) "
                "or llama_index.postprocessor.rag_rerank.LlamaIndexLLM(llm), or give an object with "
                "model_name, complete() and acomplete()"
            )

    def _documents(self, query: str, documents: Sequence[Document | str]) -> list[Document]:
        """Check the query and accept plain strings, before any LLM call; mark the passages the
        prompt will cut to ``max_passage_tokens``."""
        check_query(query)
        docs = as_documents(documents)
        for i, doc in enumerate(docs):
            check_unicode(doc.text, f"passage {i}")
        cut = {i for i, doc in enumerate(docs) if self._tokens(doc.text) > self.max_passage_tokens}
        if cut:
            log.info(
                "%d of %d passages cut to %d tokens in the LLM prompts (marked: truncated_by)",
                len(cut),
                len(docs),
                self.max_passage_tokens,
            )
        return [mark_truncated(doc, "llm-prompt") if i in cut else doc for i, doc in enumerate(docs)]

    def _tokens(self, text: str) -> int:
        return len(self._encoding.encode(text, disallowed_special=()))

    def _clip(self, text: str) -> str:
        tokens = self._encoding.encode(text, disallowed_special=())
        if len(tokens) <= self.max_passage_tokens:
            return text
        return self._encoding.decode(tokens[: self.max_passage_tokens])

    def _ask(self, prompt: str) -> tuple[str | None, LLMCall]:
        cached = self.cache.get(model_key(self.llm), prompt) if self.cache is not None else None
        if cached is not None:
            return cached, LLMCall(self._tokens(prompt), self._tokens(cached), 0.0, cached=True)
        started = time.perf_counter()
        try:
            answer = (
                self.llm.complete(prompt)
                if self.timeout is None
                else _call_with_timeout(self.llm, prompt, self.timeout)
            )
        except TimeoutError:
            return self._failed(prompt, started, f"timed out after {self.timeout}s")
        except Exception as error:  # noqa: BLE001 - any client's error becomes a reported fallback
            return self._failed(prompt, started, f"{type(error).__name__}: {error}")
        result = self._answered(prompt, answer, started)
        self._remember(prompt, result[0])
        return result

    async def _aask(self, prompt: str) -> tuple[str | None, LLMCall]:
        cached = self.cache.get(model_key(self.llm), prompt) if self.cache is not None else None
        if cached is not None:
            return cached, LLMCall(self._tokens(prompt), self._tokens(cached), 0.0, cached=True)
        started = time.perf_counter()
        try:
            answer = await asyncio.wait_for(self.llm.acomplete(prompt), self.timeout)
        except asyncio.TimeoutError:
            return self._failed(prompt, started, f"timed out after {self.timeout}s")
        except Exception as error:  # noqa: BLE001 - any client's error becomes a reported fallback
            return self._failed(prompt, started, f"{type(error).__name__}: {error}")
        result = self._answered(prompt, answer, started)
        await asyncio.to_thread(self._remember, prompt, result[0])  # file I/O off the event loop
        return result

    def _failed(self, prompt: str, started: float, error: str) -> tuple[None, LLMCall]:
        return None, LLMCall(self._tokens(prompt), 0, time.perf_counter() - started, error=error)

    def _answered(self, prompt: str, answer: object, started: float) -> tuple[str | None, LLMCall]:
        seconds = time.perf_counter() - started
        if not isinstance(answer, str):
            return self._failed(prompt, started, f"answer is a {type(answer).__name__}, not text")
        return answer, LLMCall(self._tokens(prompt), self._tokens(answer), seconds)

    def _remember(self, prompt: str, answer: str | None) -> None:
        if self.cache is not None and answer is not None:
            self.cache.put(model_key(self.llm), prompt, answer)

    def rerank(self, query: str, documents: Sequence[Document | str]) -> list[Document]:
        """Every document, best first (see ``rerank_with_report`` for tokens and fallbacks)."""
        return self.rerank_with_report(query, documents).documents

    async def arerank(self, query: str, documents: Sequence[Document | str]) -> list[Document]:
        return (await self.arerank_with_report(query, documents)).documents

    def rerank_with_report(self, query: str, documents: Sequence[Document | str]) -> LLMRerankResult:
        raise NotImplementedError

    async def arerank_with_report(self, query: str, documents: Sequence[Document | str]) -> LLMRerankResult:
        raise NotImplementedError


def model_key(llm: Any) -> str:
    """The score cache's key for ``llm``: its ``cache_key`` where it has one (a local model: weights,
    precision, device, runtime version), else its name (a server's model, a wrapped framework LLM)."""
    return str(getattr(llm, "cache_key", None) or llm.model_name)


def scored_first(documents: list[Document], scores: Sequence[float | None], kind: str) -> list[Document]:
    """The documents with a finite score, best first (ties in input order), then the rest in input
    order, each scored below every scored one."""
    rated = [(s, i) for i, s in enumerate(scores) if s is not None and math.isfinite(s)]
    rated.sort(key=lambda pair: -pair[0])
    ranked = [documents[i].with_score(s, kind) for s, i in rated]
    lowest = min((s for s, _ in rated), default=0.0)
    kept = {i for _, i in rated}
    rest = [doc for i, doc in enumerate(documents) if i not in kept]
    return ranked + [doc.with_score(lowest - 1 - j * 1e-3, kind) for j, doc in enumerate(rest)]
