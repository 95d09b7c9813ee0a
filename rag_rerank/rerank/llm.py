"""LLM rerankers: pointwise relevance ratings and RankGPT-style listwise permutations.

Any LLM works through the two-method ``LLM`` protocol; the LangChain and LlamaIndex
packages wrap their chat models / LLMs in it (``LangChainLLM``, ``LlamaIndexLLM``).
Whatever the LLM answers (malformed, partial, repeated or out-of-range ids, refusals,
errors, timeouts) the result holds every input document exactly once; documents the LLM
did not rank keep their previous relative order after the ranked ones, and each such
fallback is reported in ``LLMRerankResult.fallbacks`` and logged, never silent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from rag_rerank.document import Document, as_documents, check_unicode, mark_truncated
from rag_rerank.rerank.base import check_query
from rag_rerank.retrieval.chunking import encoding_for, get_encoding

log = logging.getLogger(__name__)

POINTWISE_PROMPT = """Rate how relevant the passage is to the search query, on a scale from 0 (unrelated) \
to 10 (answers it completely). Reply with the number only.

Query: {query}

Passage: {passage}

Relevance (0-10):"""

LISTWISE_PROMPT = """I will give you {count} passages, each marked with an identifier in brackets. \
Rank them by relevance to the search query, most relevant first.

Query: {query}

{passages}

Search query: {query}
Rank the {count} passages above by relevance. Answer only with the identifiers in order, \
e.g. [2] > [1] > [3], and nothing else."""


@runtime_checkable
class LLM(Protocol):
    """What an LLM reranker needs: a name (for caching and reports) and text completion."""

    model_name: str

    def complete(self, prompt: str) -> str: ...

    async def acomplete(self, prompt: str) -> str: ...


@dataclass
class LLMCall:
    """One LLM call: tokens counted with tiktoken, wall time, whether the cache answered."""

    prompt_tokens: int
    completion_tokens: int
    seconds: float
    cached: bool = False
    error: str | None = None


@dataclass
class LLMRerankResult:
    documents: list[Document]
    calls: list[LLMCall] = field(default_factory=list)
    fallbacks: list[str] = field(default_factory=list)

    @property
    def prompt_tokens(self) -> int:
        return sum(call.prompt_tokens for call in self.calls)

    @property
    def completion_tokens(self) -> int:
        return sum(call.completion_tokens for call in self.calls)


def _call_with_timeout(llm: LLM, prompt: str, timeout: float) -> object:
    """``llm.complete(prompt)``, or TimeoutError after ``timeout`` seconds. The call runs in a
    daemon thread: a hung client is abandoned and cannot keep the interpreter from exiting."""
    outcome: dict[str, object] = {}
    done = threading.Event()

    def call() -> None:
        try:
            outcome["answer"] = llm.complete(prompt)
        except BaseException as error:  # noqa: BLE001 - handed to the caller, which reports it
            outcome["error"] = error
        finally:
            done.set()

    threading.Thread(target=call, name="rag-rerank-llm-call", daemon=True).start()
    if not done.wait(timeout):
        raise TimeoutError(f"no answer in {timeout}s")
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["answer"]


class JudgementCache:
    """LLM answers keyed by (model, prompt), in memory and optionally in a JSON-lines file,
    so repeated comparisons do not pay twice."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else None
        self._answers: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()
        self._unterminated = False
        if self.path and self.path.exists():
            self._load(self.path)

    def _load(self, path: Path) -> None:
        """Every whole line; a line cut short by a crash mid-write is skipped (and warned about)."""
        text = path.read_text(encoding="utf-8")
        self._unterminated = bool(text) and not text.endswith("\n")
        skipped = 0
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                self._answers[(row["model"], row["prompt"])] = row["answer"]
            except (json.JSONDecodeError, KeyError, TypeError):
                skipped += 1
        if skipped:
            log.warning("judgement cache %s: skipped %d damaged line(s) (a write cut short?)", path, skipped)

    def get(self, model: str, prompt: str) -> str | None:
        return self._answers.get((model, prompt))

    def put(self, model: str, prompt: str, answer: str) -> None:
        with self._lock:
            self._answers[(model, prompt)] = answer
            if self.path:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                line = json.dumps({"model": model, "prompt": prompt, "answer": answer}) + "\n"
                with self.path.open("a", encoding="utf-8") as handle:
                    # after a half-written last line, start a new line rather than extend the damage
                    handle.write(("\n" if self._unterminated else "") + line)
                self._unterminated = False

    def __len__(self) -> int:
        return len(self._answers)


class _LLMReranker:
    """Shared plumbing: prompt truncation, token counting, cache, timeouts."""

    def __init__(
        self,
        llm: LLM,
        *,
        prompt: str,
        max_passage_tokens: int,
        timeout: float | None,
        cache: JudgementCache | None,
        encoding: str | None,
    ):
        if not isinstance(llm, LLM):
            raise TypeError(
                f"llm is a {type(llm).__name__}; wrap it first: langchain_rag_rerank.LangChainLLM(chat_model) "
                "or llama_index.postprocessor.rag_rerank.LlamaIndexLLM(llm), or give an object with "
                "model_name, complete() and acomplete()"
            )
        self.llm = llm
        self.prompt = prompt
        self.max_passage_tokens = max_passage_tokens
        self.timeout = timeout
        self.cache = cache
        self._encoding = get_encoding(encoding or encoding_for(llm.model_name))

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
        cached = self.cache.get(self.llm.model_name, prompt) if self.cache is not None else None
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
        cached = self.cache.get(self.llm.model_name, prompt) if self.cache is not None else None
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
            self.cache.put(self.llm.model_name, prompt, answer)

    def rerank(self, query: str, documents: Sequence[Document | str]) -> list[Document]:
        """Every document, best first (see ``rerank_with_report`` for tokens and fallbacks)."""
        return self.rerank_with_report(query, documents).documents

    async def arerank(self, query: str, documents: Sequence[Document | str]) -> list[Document]:
        return (await self.arerank_with_report(query, documents)).documents

    def rerank_with_report(self, query: str, documents: Sequence[Document | str]) -> LLMRerankResult:
        raise NotImplementedError

    async def arerank_with_report(self, query: str, documents: Sequence[Document | str]) -> LLMRerankResult:
        raise NotImplementedError


class PointwiseLLMReranker(_LLMReranker):
    """The LLM rates each passage 0-10 on its own; documents are sorted by rating.

    Ties keep their input order. A rating that cannot be parsed or lies outside 0-10 is
    a fallback: that document goes after the rated ones, in input order.
    ``max_concurrency`` calls run at once (threads for ``rerank``, tasks for ``arerank``).
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
        rated, unrated, fallbacks = [], [], []
        for i, (doc, (answer, call)) in enumerate(zip(docs, answers)):
            rating, problem = parse_rating(answer) if answer is not None else (None, call.error)
            if rating is None:
                fallbacks.append(f"document {i}: {problem}")
                unrated.append(doc)
            else:
                rated.append(doc.with_score(rating, "rating"))
        rated.sort(key=lambda doc: -(doc.score or 0.0))
        lowest = min((doc.score or 0.0 for doc in rated), default=0.0)
        ranked = rated + [doc.with_score(lowest - 1 - j * 1e-3, "rating") for j, doc in enumerate(unrated)]
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


class ListwiseLLMReranker(_LLMReranker):
    """RankGPT-style: the LLM orders a window of passages; the window slides from the
    bottom of the list to the top, ``step`` at a time, so the best candidates bubble up
    through overlapping windows and more candidates than fit one prompt get ranked.

    Documents get ``score = n - position`` (higher is better).
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
