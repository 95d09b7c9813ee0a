"""The causal-LM methods over an OpenAI-compatible server (vLLM, llama.cpp's server, llama-cpp-python's,
OpenAI): text from chat completions, log-likelihoods from ``/v1/completions`` with ``echo`` and
``logprobs``, label probabilities from chat ``logprobs`` / ``top_logprobs``.

What a server lacks is found by one small request before the first score, and named
(``ScoringUnsupported``): a reranker never runs a whole query on an endpoint that cannot answer it.
A batch's prompts go to ``/v1/completions`` in one request where the server takes a list of prompts.
Requests made inside ``deadline(seconds)`` wait no longer than what is left of it.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import numpy as np

ALIGNED_AT_LEAST = -3.0  # mean log-probability of "..., 14, 15," read right (a model counts: near 0)
TOP_LOGPROBS = 20  # the most chat completions return; labels outside them get the lowest shown, less log 2


class ScoringUnsupported(RuntimeError):
    """The model or server cannot give the probabilities asked for (a server without ``logprobs``):
    raised before any query is scored, never turned into a reranker's fallback."""


class ServerBusy(RuntimeError):
    """The server did not answer this time (a timeout, a dropped connection, 429/502/503/504): a later
    request may pass, so a reranker keeps that batch's first-stage order and says so."""


class RequestRejected(RuntimeError):
    """The server answered with an error status that is neither busy nor a missing endpoint (400, 422,
    500...): raised as it is, except that a list of prompts refused so is sent again one per request."""


BUSY = (429, 502, 503, 504)

# When the requests of the running block must be answered by (time.monotonic()), where a block set one
_DEADLINE: ContextVar[float | None] = ContextVar("rag_rerank_llm_deadline", default=None)


@contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """Bounds every ``OpenAIServerLLM`` request made inside the block, in this thread or asyncio task:
    each waits at most the smaller of its client's ``timeout`` and what is left of ``seconds``; once
    nothing is left, none is sent (``TimeoutError``). A request cut short by it is a ``TimeoutError``
    too (not ``ServerBusy``: the server may be well, the time was spent). ``None`` adds no bound; a
    block inside another keeps the earlier end.

    This is how a reranker's ``timeout`` reaches the server without a parameter on the ``ScoringLLM``
    methods: a model in this process sends nothing, so it has nothing to bound and needs no change.
    The bound is httpx's, per phase of a request (connect, write, each read): a server that answers
    in one piece, as completions servers do, is held to it; one that trickled bytes could stretch it.
    """
    if seconds is None:
        yield
        return
    end = time.monotonic() + seconds
    outer = _DEADLINE.get()
    token = _DEADLINE.set(end if outer is None else min(outer, end))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


class OpenAIServerLLM:
    """An OpenAI-compatible server as an ``LLM`` and a ``ScoringLLM``.

    Args:
        base_url: The server, e.g. ``http://localhost:8080/v1`` (``/v1`` is added where missing).
        model: The model name sent with each request (default: the first the server lists).
        api_key: Sent as a bearer token (default ``OPENAI_API_KEY``, else none).
        timeout: Seconds per request (less inside ``deadline()``, where less is left of it).
        max_tokens: The longest answer ``complete`` asks for.
    """

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 120.0,
        max_tokens: int = 256,
    ):
        import httpx

        root = base_url.rstrip("/")
        self.base_url = root if root.endswith("/v1") else root + "/v1"
        key = api_key or os.environ.get("OPENAI_API_KEY")
        self._client = httpx.Client(
            base_url=self.base_url, timeout=timeout, headers={"Authorization": f"Bearer {key}"} if key else {}
        )
        self.timeout = timeout
        self.max_tokens = max_tokens
        self.model_name = model or self._first_model()
        self._checked: set[str] = set()
        # whether /completions takes a list of prompts: None until a batch of two or more has told
        self._lists: bool | None = None

    def __repr__(self) -> str:
        return f"OpenAIServerLLM({self.base_url!r}, model={self.model_name!r})"

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        import httpx

        timeout, cut = self._time_left(path)
        try:
            response = self._client.post(path, json={"model": self.model_name, **body}, timeout=timeout)
        except httpx.TimeoutException as error:
            if cut:
                raise TimeoutError(
                    f"{self.base_url}{path}: no answer in the {timeout:.2f}s left of the deadline"
                ) from error
            raise ServerBusy(f"{self.base_url}{path}: {type(error).__name__}: {error}") from error
        except (httpx.RemoteProtocolError, httpx.ReadError) as error:
            raise ServerBusy(f"{self.base_url}{path}: {type(error).__name__}: {error}") from error
        if response.status_code in BUSY:
            raise ServerBusy(f"{self.base_url}{path} answered {response.status_code}: {response.text[:200]}")
        if response.status_code in (404, 405, 501):
            raise ScoringUnsupported(
                f"{self.base_url}{path} is not served here ({response.status_code}): {response.text[:200]}"
            )
        if response.status_code >= 400:
            raise RequestRejected(f"{self.base_url}{path} answered {response.status_code}: {response.text[:300]}")
        return dict(response.json())

    def _time_left(self, path: str) -> tuple[float, bool]:
        """This request's timeout, and whether the running ``deadline()`` made it shorter than the
        client's own; ``TimeoutError`` where the deadline has passed (the request is not sent)."""
        end = _DEADLINE.get()
        if end is None:
            return self.timeout, False
        left = end - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"{self.base_url}{path}: not sent, the deadline passed")
        own = math.inf if self.timeout is None else self.timeout  # None: httpx's "no limit"
        return min(own, left), left < own

    def _first_model(self) -> str:
        response = self._client.get("/models")
        response.raise_for_status()
        models = response.json().get("data") or []
        if not models:
            raise RuntimeError(f"{self.base_url}/models lists no model; pass model=")
        return str(models[0]["id"])

    def complete(self, prompt: str) -> str:
        """The server's answer to ``prompt`` as one user message (temperature 0)."""
        body = {"messages": [{"role": "user", "content": prompt}], "temperature": 0, "max_tokens": self.max_tokens}
        return str(self._post("/chat/completions", body)["choices"][0]["message"]["content"] or "").strip()

    async def acomplete(self, prompt: str) -> str:
        return await asyncio.to_thread(self.complete, prompt)

    def continuation_logprobs(self, contexts: Sequence[str], continuation: str) -> list[float]:
        """log P(continuation | context) from ``/v1/completions`` with ``echo`` (the prompt's own logprobs),
        the contexts in one request where the server takes a list of prompts (``_completions``)."""
        self._check("echo", self._echo_is_aligned)
        choices = self._completions([context + continuation for context in contexts])
        return [
            self._echoed(c, len(context), len(context) + len(continuation)) for c, context in zip(choices, contexts)
        ]

    def _echo_is_aligned(self) -> None:
        """Each echoed token's log-probability must come from the position before it (OpenAI's and vLLM's
        meaning). llama-cpp-python's server reports the distribution *after* each token instead
        (abetlen/llama-cpp-python#1983), and llama.cpp's own server echoes none (ggml-org/llama.cpp#27174).
        Told apart on a counting prompt, which every LM continues with near certainty: read right, its
        last tokens average above ``ALIGNED_AT_LEAST``; read one position late, far below."""
        prompt = ", ".join(str(i) for i in range(1, 16)) + ","
        (choice,) = self._completions([prompt])
        logprobs = choice.get("logprobs") or {}
        offsets, values = logprobs.get("text_offset") or [], logprobs.get("token_logprobs") or []
        read = [v for offset, v in zip(offsets, values) if offset < len(prompt) and v is not None][-10:]
        if not read:
            self._echoed(choice, 0, len(prompt))  # raises, naming what is missing
        mean = sum(read) / len(read)
        if mean < ALIGNED_AT_LEAST:
            raise ScoringUnsupported(
                f"{self.base_url}/completions gives a counting prompt's tokens log-probabilities of {mean:.1f} on "
                "average: its echoed log-probabilities are not each token's own (llama-cpp-python's server reports "
                "them one position late: abetlen/llama-cpp-python#1983), so query likelihoods read from it would be "
                "wrong; serve the model with vLLM, or run it in this process (TransformersLM)"
            )

    def _completions(self, prompts: Sequence[str]) -> list[dict[str, Any]]:
        """One ``/v1/completions`` choice per prompt (echo, logprobs, one token), in the prompts' order.

        Two or more prompts go in one request (``prompt`` a list; each choice matched by its ``index``)
        where the server takes lists, as vLLM and llama.cpp's server do. The first such batch tells: a
        list refused with an error status (400, 422; llama-cpp-python's server answers 500) or answered
        with a single choice makes this client send one prompt per request from then on. Any other
        count of choices is an error naming the server and what it answered: no score is guessed onto
        a passage."""
        if len(prompts) < 2 or self._lists is False:
            return [self._ordered(self._answer(prompt), 1)[0] for prompt in prompts]
        learning = self._lists is None
        try:
            choices = self._answer(list(prompts))
        except RequestRejected:
            if not learning:
                raise
            choices = []
        if learning and len(choices) <= 1:  # refused, or the list read as one prompt
            self._lists = False
            try:
                return self._completions(prompts)
            except Exception:  # one prompt a request fails too: the list was not what the server refused
                self._lists = None
                raise
        ordered = self._ordered(choices, len(prompts))
        self._lists = True
        return ordered

    def _answer(self, prompt: str | list[str]) -> list[dict[str, Any]]:
        """The choices of one ``/v1/completions`` request: the prompt echoed with logprobs, one token more."""
        body = {"prompt": prompt, "max_tokens": 1, "echo": True, "logprobs": 1, "temperature": 0}
        return list(self._post("/completions", body).get("choices") or [])

    def _ordered(self, choices: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
        """``choices`` by their index, one per prompt sent, or an error naming the server and what it answered."""
        if count == 1 and len(choices) == 1:
            return choices
        indexes = [choice.get("index") for choice in choices]
        if len(choices) != count or sorted(i for i in indexes if isinstance(i, int)) != list(range(count)):
            raise RuntimeError(
                f"{self.base_url}/completions answered {len(choices)} choice(s) (index {indexes[:20]}) for "
                f"{count} prompt(s): one choice per prompt was expected, so no score could be matched to its prompt"
            )
        return sorted(choices, key=lambda choice: int(choice["index"]))

    def _echoed(self, choice: dict[str, Any], start: int, end: int) -> float:
        """The sum of the echoed log-probabilities of the prompt's tokens in ``[start, end)`` (characters)."""
        logprobs = choice.get("logprobs") or {}
        offsets, values = logprobs.get("text_offset"), logprobs.get("token_logprobs")
        if not offsets or not values or len(offsets) < 2:
            raise ScoringUnsupported(
                f"{self.base_url}/completions gave no log-probabilities for the prompt (echo with logprobs): the "
                "query-likelihood reranker needs them (vLLM, or llama-cpp-python's server with --logits_all true)"
            )
        # the prompt's tokens that start at or after the continuation (the answer's one token is not echoed text)
        picked = [v for offset, v in zip(offsets, values) if start <= offset < end]
        if not picked or any(v is None or not math.isfinite(v) for v in picked):
            raise ScoringUnsupported(f"{self.base_url}/completions echoed no usable log-probabilities: {values[:5]}")
        return float(sum(picked))

    def label_logprobs(self, prompts: Sequence[str], labels: Sequence[str]) -> list[list[float]]:
        """log P(answer starts with label) from chat ``top_logprobs`` (labels not among them: below the lowest),
        one request per prompt: chat completions take one conversation each."""
        self._check("top_logprobs", lambda: self._labels("Is the sky blue? Answer yes or no.", labels))
        return [self._labels(prompt, labels) for prompt in prompts]

    def _labels(self, prompt: str, labels: Sequence[str]) -> list[float]:
        body = {
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 1,
            "temperature": 0,
            "logprobs": True,
            "top_logprobs": TOP_LOGPROBS,
        }
        choice = self._post("/chat/completions", body)["choices"][0]
        content = (choice.get("logprobs") or {}).get("content") or []
        top = content[0].get("top_logprobs") if content else None
        if not top:
            raise ScoringUnsupported(
                f"{self.base_url}/chat/completions gave no top_logprobs: the yes/no reranker needs them"
            )
        floor = min(float(t["logprob"]) for t in top) - math.log(2)
        out = []
        for label in labels:
            found = [float(t["logprob"]) for t in top if t["token"].strip().lower() == label.lower()]
            out.append(float(np.logaddexp.reduce(found)) if found else floor)
        return out

    def _check(self, what: str, probe: Any) -> None:
        """One small request the first time: a server that cannot do ``what`` fails here, by name."""
        if what not in self._checked:
            probe()
            self._checked.add(what)

    def close(self) -> None:
        self._client.close()
