"""Helpers for the server tests: a real uvicorn server in a thread, a real `chroma run`, and an
OpenAI-compatible /v1/completions that echoes log-probabilities, each on a free loopback port."""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import uvicorn

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self needs Python 3.11

KEY = "secret-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Running:
    """A uvicorn server in a thread; stops when the test is done."""

    def __init__(self, app):
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started or httpx.get(f"{self.url}/ready").status_code != 200:
            if time.time() > deadline:
                raise RuntimeError("server did not get ready")
            time.sleep(0.05)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=20)


class ChromaServer:
    """`chroma run` from the chromadb package, stoppable and restartable on the same folder and port."""

    def __init__(self, folder: Path):
        self.folder, self.port = folder, free_port()
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        chroma = shutil.which("chroma", path=str(Path(sys.executable).parent)) or "chroma"
        self.process = subprocess.Popen(
            [chroma, "run", "--path", str(self.folder), "--port", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 30
        while True:
            try:
                if httpx.get(f"http://localhost:{self.port}/api/v2/heartbeat", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert self.process.poll() is None and time.time() < deadline, "chroma run did not start"
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


class CompletionsStub:
    """``/v1/completions`` with ``echo`` and ``logprobs`` as vLLM and llama.cpp's server answer it:
    ``prompt`` a string or a list of them, one choice per prompt matched by ``index`` (listed here in
    reverse, as nothing promises their order). The LM is a deterministic stand-in: each token (a word
    with the spaces before it) gets log-probability -0.5 where the prompt had that word before, else
    -2.0; the first token gets none, as servers report it.

    ``lists`` says what a list of prompts gets: ``"yes"``, ``"refused"`` (400), ``"first"`` (only the
    first prompt answered: one choice) or ``"short"`` (one choice too few). After the first
    ``prompt_answers`` requests, each answer waits ``delay`` seconds. ``requests`` holds every body.
    Runs from construction; ``with CompletionsStub() as stub:`` stops it after."""

    def __init__(self, lists: str = "yes"):
        from starlette.applications import Starlette
        from starlette.responses import JSONResponse, PlainTextResponse
        from starlette.routing import Route

        self.lists, self.delay, self.prompt_answers = lists, 0.0, 0
        self.requests: list[dict] = []
        self.closing = False

        async def completions(request):
            body = await request.json()
            self.requests.append(body)
            if len(self.requests) > self.prompt_answers:
                await self._wait()
            prompt = body["prompt"]
            if isinstance(prompt, str):
                return JSONResponse(self._payload(body, [self.choice(prompt, 0)]))
            if self.lists == "refused":
                return JSONResponse({"error": {"message": "prompt must be a string"}}, status_code=400)
            choices = [self.choice(text, i) for i, text in enumerate(prompt)]
            choices = {"first": choices[:1], "short": choices[:-1]}.get(self.lists, choices)
            return JSONResponse(self._payload(body, choices[::-1]))

        async def models(request):
            return JSONResponse({"object": "list", "data": [{"id": "stub-lm", "object": "model"}]})

        async def ready(request):
            return PlainTextResponse("ok")

        app = Starlette(
            routes=[
                Route("/v1/completions", completions, methods=["POST"]),
                Route("/v1/models", models),
                Route("/ready", ready),
            ]
        )
        self.running = Running(app)
        self.base_url = f"{self.running.url}/v1"

    async def _wait(self) -> None:
        """``delay`` seconds, or less once the stub is stopping (a client that gave up leaves no wait behind)."""
        end = time.monotonic() + self.delay
        while time.monotonic() < end and not self.closing:
            await asyncio.sleep(0.05)

    @staticmethod
    def _payload(body: dict, choices: list[dict]) -> dict:
        return {"id": "cmpl-stub", "object": "text_completion", "model": body["model"], "choices": choices}

    @staticmethod
    def choice(prompt: str, index: int) -> dict:
        tokens = [(m.start(), m.group()) for m in re.finditer(r"\s*\S+", prompt)]
        seen: set[str] = set()
        values: list[float | None] = []
        for _, token in tokens:
            word = token.strip().lower()
            values.append(None if not values else -0.5 if word in seen else -2.0)
            seen.add(word)
        return {
            "index": index,
            "text": prompt + ".",
            "logprobs": {
                "tokens": [token for _, token in tokens] + ["."],
                "text_offset": [offset for offset, _ in tokens] + [len(prompt)],
                "token_logprobs": values + [-1.0],
            },
            "finish_reason": "length",
        }

    def stop(self) -> None:
        self.closing = True
        self.running.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
