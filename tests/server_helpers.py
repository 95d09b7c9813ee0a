"""Helpers for the server tests: a real uvicorn server in a thread, on a free loopback port."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import uvicorn

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
