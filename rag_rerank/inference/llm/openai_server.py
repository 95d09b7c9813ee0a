"""The causal-LM methods over an OpenAI-compatible server (vLLM, llama.cpp's server, llama-cpp-python's,
OpenAI): text from chat completions, log-likelihoods from ``/v1/completions`` with ``echo`` and
``logprobs``, label probabilities from chat ``logprobs`` / ``top_logprobs``.

What a server lacks is found by one small request before the first score, and named
(``ScoringUnsupported``): a reranker never runs a whole query on an endpoint that cannot answer it.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Sequence
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


BUSY = (429, 502, 503, 504)


class OpenAIServerLLM:
    """An OpenAI-compatible server as an ``LLM`` and a ``ScoringLLM``.

    Args:
        base_url: The server, e.g. ``http://localhost:8080/v1`` (``/v1`` is added where missing).
        model: The model name sent with each request (default: the first the server lists).
        api_key: Sent as a bearer token (default ``OPENAI_API_KEY``, else none).
        timeout: Seconds per request.
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
        self.max_tokens = max_tokens
        self.model_name = model or self._first_model()
        self._checked: set[str] = set()

    def __repr__(self) -> str:
        return f"OpenAIServerLLM({self.base_url!r}, model={self.model_name!r})"

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        import httpx

        try:
            response = self._client.post(path, json={"model": self.model_name, **body})
        except (httpx.TimeoutException, httpx.RemoteProtocolError, httpx.ReadError) as error:
            raise ServerBusy(f"{self.base_url}{path}: {type(error).__name__}: {error}") from error
        if response.status_code in BUSY:
            raise ServerBusy(f"{self.base_url}{path} answered {response.status_code}: {response.text[:200]}")
        if response.status_code in (404, 405, 501):
            raise ScoringUnsupported(
                f"{self.base_url}{path} is not served here ({response.status_code}): {response.text[:200]}"
            )
        if response.status_code >= 400:
            raise RuntimeError(f"{self.base_url}{path} answered {response.status_code}: {response.text[:300]}")
        return dict(response.json())

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
        """log P(continuation | context) from ``/v1/completions`` with ``echo`` (the prompt's own logprobs)."""
        self._check("echo", self._echo_is_aligned)
        return [self._echoed(context, continuation) for context in contexts]

    def _echo_is_aligned(self) -> None:
        """Each echoed token's log-probability must come from the position before it (OpenAI's and vLLM's
        meaning). llama-cpp-python's server reports the distribution *after* each token instead
        (abetlen/llama-cpp-python#1983), and llama.cpp's own server echoes none (ggml-org/llama.cpp#27174).
        Told apart on a counting prompt, which every LM continues with near certainty: read right, its
        last tokens average above ``ALIGNED_AT_LEAST``; read one position late, far below."""
        prompt = ", ".join(str(i) for i in range(1, 16)) + ","
        body = {"prompt": prompt, "max_tokens": 1, "echo": True, "logprobs": 1, "temperature": 0}
        logprobs = self._post("/completions", body)["choices"][0].get("logprobs") or {}
        offsets, values = logprobs.get("text_offset") or [], logprobs.get("token_logprobs") or []
        read = [v for offset, v in zip(offsets, values) if offset < len(prompt) and v is not None][-10:]
        if not read:
            self._echoed("The sky is", " blue")  # raises, naming what is missing
        mean = sum(read) / len(read)
        if mean < ALIGNED_AT_LEAST:
            raise ScoringUnsupported(
                f"{self.base_url}/completions gives a counting prompt's tokens log-probabilities of {mean:.1f} on "
                "average: its echoed log-probabilities are not each token's own (llama-cpp-python's server reports "
                "them one position late: abetlen/llama-cpp-python#1983), so query likelihoods read from it would be "
                "wrong; serve the model with vLLM, or run it in this process (TransformersLM)"
            )

    def _echoed(self, context: str, continuation: str) -> float:
        body = {"prompt": context + continuation, "max_tokens": 1, "echo": True, "logprobs": 1, "temperature": 0}
        logprobs = self._post("/completions", body)["choices"][0].get("logprobs") or {}
        offsets, values = logprobs.get("text_offset"), logprobs.get("token_logprobs")
        if not offsets or not values or len(offsets) < 2:
            raise ScoringUnsupported(
                f"{self.base_url}/completions gave no log-probabilities for the prompt (echo with logprobs): the "
                "query-likelihood reranker needs them (vLLM, or llama-cpp-python's server with --logits_all true)"
            )
        start = len(context)
        # the prompt's tokens that start at or after the continuation (the answer's one token is not echoed text)
        picked = [v for offset, v in zip(offsets, values) if start <= offset < len(context) + len(continuation)]
        if not picked or any(v is None or not math.isfinite(v) for v in picked):
            raise ScoringUnsupported(f"{self.base_url}/completions echoed no usable log-probabilities: {values[:5]}")
        return float(sum(picked))

    def label_logprobs(self, prompts: Sequence[str], labels: Sequence[str]) -> list[list[float]]:
        """log P(answer starts with label) from chat ``top_logprobs`` (labels not among them: below the lowest)."""
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
