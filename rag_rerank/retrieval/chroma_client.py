"""Chroma clients: embedded (a folder) or a server, and riding out a server restart.

A Chroma server that restarts (a deploy, a crash) refuses connections for a few seconds. Every
call to a server goes through ``Retrying``: connection errors are retried with backoff (about 8 s
in all), and if the server is still down the caller gets ``StoreUnavailable``, which says where
the server was expected and how to start it. Chroma's writes are idempotent (upsert, delete by
id), so a retried call cannot write twice.
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

RETRY_DELAYS = (0.25, 0.5, 1.0, 2.0, 4.0)  # seconds between tries: a `chroma run` restart fits


class StoreUnavailable(ConnectionError):
    """The Chroma server did not answer, even after retries."""


def make_client(path: str | Path, host: str | None, port: int) -> Any:
    """A Chroma client: a server at ``host`` if given (calls retried), else the embedded store under ``path``."""
    import chromadb
    from chromadb.config import Settings

    settings = Settings(anonymized_telemetry=False)
    if host:
        where = f"{host}:{port}"
        connect = functools.partial(chromadb.HttpClient, host=host, port=port, settings=settings)
        return Retrying(with_retries(connect, where), where)
    Path(path).mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(path=str(path), settings=settings)


class Retrying:
    """Wraps a Chroma client or collection: every method call is retried on connection errors,
    and what it returns (a collection) is wrapped too."""

    def __init__(self, target: Any, where: str):
        self._target, self._where = target, where

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if not callable(value):
            return value

        @functools.wraps(value)
        def call(*args: Any, **kwargs: Any) -> Any:
            result = with_retries(functools.partial(value, *args, **kwargs), self._where)
            return Retrying(result, self._where) if _is_collection(result) else result

        return call


def with_retries(call: functools.partial, where: str) -> Any:
    import httpx

    for delay in (*RETRY_DELAYS, None):
        try:
            return call()
        except (httpx.TransportError, ConnectionError, ValueError) as error:
            if isinstance(error, ValueError) and "Could not connect" not in str(error):
                raise  # a real ValueError from Chroma (a bad filter, a bad name)
            if delay is None:
                raise StoreUnavailable(
                    f"the Chroma server at {where} did not answer after {len(RETRY_DELAYS) + 1} tries over "
                    f"{sum(RETRY_DELAYS):.0f} s ({type(error).__name__}: {error}). Is it running? Start it with "
                    "`chroma run --path DATA --port PORT`, or check --chroma-host / --chroma-port."
                ) from error
            log.warning("Chroma server at %s unreachable (%s); retrying in %.2g s", where, error, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def _is_collection(value: Any) -> bool:
    return type(value).__name__ == "Collection"
