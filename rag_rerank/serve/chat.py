"""Generation through an OpenAI-compatible chat endpoint (OpenAI, vLLM, Ollama's /v1, llama.cpp)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from rag_rerank.serve.config import ServerConfig


class LLMUnavailable(Exception):
    """The chat endpoint could not be reached or answered with an error."""


async def chat(config: ServerConfig, prompt: str, *, stream: bool) -> AsyncIterator[str]:
    """The answer's text (in pieces when ``stream``); any failure of the endpoint is LLMUnavailable."""
    import httpx

    url = (config.llm_base_url or "").rstrip("/") + "/chat/completions"
    try:
        async for piece in _complete(config, url, prompt, stream):
            yield piece
    except (httpx.HTTPError, KeyError, IndexError, ValueError) as error:
        raise LLMUnavailable(f"the LLM at {url} failed: {type(error).__name__}: {error}") from error


async def _complete(config: ServerConfig, url: str, prompt: str, stream: bool) -> AsyncIterator[str]:
    import httpx

    headers = {"Authorization": f"Bearer {config.llm_api_key}"} if config.llm_api_key else {}
    payload = {"model": config.llm_model, "messages": [{"role": "user", "content": prompt}], "stream": stream}
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
