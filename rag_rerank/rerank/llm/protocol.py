"""What an LLM reranker needs of an LLM (``LLM`` for text, ``ScoringLLM`` for probabilities), and what
one call and one rerank cost (``LLMCall``, ``LLMRerankResult``)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from rag_rerank.document import Document
from rag_rerank.inference.llm.openai_server import ScoringUnsupported


@runtime_checkable
class LLM(Protocol):
    """What an LLM reranker needs: a name (for caching and reports) and text completion."""

    model_name: str

    def complete(self, prompt: str) -> str: ...

    async def acomplete(self, prompt: str) -> str: ...


__all__ = ["LLM", "LLMCall", "LLMRerankResult", "ScoringLLM", "ScoringUnsupported"]


@runtime_checkable
class ScoringLLM(Protocol):
    """What the query-likelihood and yes/no rerankers need: probabilities, not text. A local model
    (``rag_rerank.inference.llm.transformers_lm.TransformersLM``) and an OpenAI-compatible server
    (``rag_rerank.inference.llm.openai_server.OpenAIServerLLM``) both offer them.

    A rerank's ``timeout`` is no parameter here: the reranker runs its batches inside
    ``openai_server.deadline(timeout)``, a context variable that bounds each request a server client
    sends by what is left of it (and sends none once nothing is). A model in this process has nothing
    to bound and ignores it; the reranker still starts no batch after the deadline."""

    model_name: str

    def continuation_logprobs(self, contexts: Sequence[str], continuation: str) -> list[float]:
        """log P(continuation | context), summed over the continuation's tokens, for each context."""
        ...

    def label_logprobs(self, prompts: Sequence[str], labels: Sequence[str]) -> list[list[float]]:
        """For each prompt, log P(the answer starts with label) for each label (any case, with or
        without a leading space)."""
        ...


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
