"""Generation through an OpenAI-compatible chat endpoint (OpenAI, vLLM, Ollama's /v1, llama.cpp)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from rag_rerank.serve.config import ServerConfig


class LLMUnavailable(Exception):
    """The chat endpoint could not be reached or answered with an error."""

    status = 502  # the HTTP status /v1/query answers with


class LLMTimedOut(LLMUnavailable):
    """The chat endpoint was reached but sent nothing for ``request_timeout`` seconds."""

    status = 504


async def chat(config: ServerConfig, prompt: str, *, stream: bool) -> AsyncIterator[str]:
    """The answer's text (in pieces when ``stream``), at most ``config.llm_max_tokens`` tokens long.

    Args:
        config: The server's settings (the endpoint, its model and key, the timeout and the answer's length).
        prompt: The user message.
        stream: Ask for server-sent events and yield each piece as it comes.

    Yields:
        The answer's pieces.

    Raises:
        LLMTimedOut: the endpoint did not answer within ``config.request_timeout`` (saying what to change).
        LLMUnavailable: any other failure of the endpoint.
    """
    import httpx

    url = (config.llm_base_url or "").rstrip("/") + "/chat/completions"
    try:
        async for piece in _complete(config, url, prompt, stream):
            yield piece
    except httpx.ReadTimeout as error:
        raise LLMTimedOut(
            f"the LLM at {url} sent nothing for {config.request_timeout:g}s (--timeout) while writing an answer "
            f"of up to {config.llm_max_tokens} tokens (--llm-max-tokens): raise --timeout, lower "
            "--llm-max-tokens, or use a faster LLM"
        ) from error
    except (httpx.HTTPError, KeyError, IndexError, ValueError) as error:
        raise LLMUnavailable(f"the LLM at {url} failed: {type(error).__name__}: {error}") from error


async def _complete(config: ServerConfig, url: str, prompt: str, stream: bool) -> AsyncIterator[str]:
    import httpx

    headers = {"Authorization": f"Bearer {config.llm_api_key}"} if config.llm_api_key else {}
    payload = {
        "model": config.llm_model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": config.llm_max_tokens,
        "stream": stream,
    }
    async with httpx.AsyncClient(timeout=config.request_timeout) as client:
        if not stream:
            response = await client.post(url, json=payload, headers=headers)
            response.raise_for_status()
            yield response.json()["choices"][0]["message"]["content"]
            return
        async with client.stream("POST", url, json=payload, headers=headers) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                delta = json.loads(data)["choices"][0].get("delta", {}).get("content")
                if delta:
                    yield delta
