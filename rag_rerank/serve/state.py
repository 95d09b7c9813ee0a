"""What every route shares: the settings, the model (loaded in the background), the batcher,
the open stores, the metrics; and the checks every request passes before it reaches the model."""

from __future__ import annotations

import asyncio
import hmac
import threading
from dataclasses import dataclass, field
from typing import Any

from fastapi import HTTPException, Request

from rag_rerank.rerank.base import check_passage, check_query
from rag_rerank.serve.batcher import Batcher, Overloaded
from rag_rerank.serve.config import ServerConfig
from rag_rerank.serve.metrics import Metrics


@dataclass
class ServerState:
    config: ServerConfig
    metrics: Metrics
    reranker: Any = None  # a CrossEncoderReranker once loaded
    batcher: Batcher | None = None
    ready: bool = False
    load_error: str | None = None
    stores: dict[str, Any] = field(default_factory=dict)
    bi_encoder: Any = None  # a BiEncoder once a store is opened
    _stores_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def model_name(self) -> str | None:
        return getattr(self.reranker, "model_name", None) or self.config.cross_encoder

    def store(self, name: str | None) -> Any:
        """The store for a request's collection: one the server was started with (or, with
        ``serve_existing_collections``, one that exists); anything else is a 404, so callers
        cannot create collections on disk or grow the server's dict of open stores."""
        from rag_rerank.retrieval.store import ChromaStore

        name = name or self.config.collection
        with self._stores_lock:
            if name in self.stores:
                return self.stores[name]
            if name not in self.config.served_collections and not self._exists(name):
                served = ", ".join(self.config.served_collections)
                raise HTTPException(
                    404,
                    f"collection {name!r} is not served here (served: {served}); start the server with "
                    "--collection NAME, or --serve-existing-collections to serve every existing one",
                )
            self.stores[name] = ChromaStore(
                name,
                path=self.config.chroma_path,
                host=self.config.chroma_host,
                port=self.config.chroma_port,
                bi_encoder=self._bi_encoder(),
            )
            return self.stores[name]

    def _bi_encoder(self) -> Any:
        """One bi-encoder for every store the server opens, as configured (built at first use)."""
        if self.bi_encoder is None:
            from rag_rerank.retrieval.embedding import BiEncoder

            config = self.config
            self.bi_encoder = BiEncoder(
                config.bi_encoder,
                device=config.device,
                backend=config.bi_encoder_backend,
                dtype=config.bi_encoder_dtype,
            )
        return self.bi_encoder

    def _exists(self, name: str) -> bool:
        if not self.config.serve_existing_collections:
            return False
        default = self.stores.get(self.config.collection)
        client = default.client if default is not None else None
        if client is None:
            from rag_rerank.retrieval.chroma_client import make_client

            client = make_client(self.config.chroma_path, self.config.chroma_host, self.config.chroma_port)
        try:
            client.get_collection(name)
        except Exception:  # noqa: BLE001 - Chroma's not-found and invalid-name errors differ by version
            return False
        return True

    async def score(self, query: str, texts: list[str], request: Request | None = None) -> list[float]:
        """Raw logits for (query, text) pairs through the shared batcher, after every check. A
        request that times out (504) or whose client hangs up is withdrawn from the queue, so
        the model never spends a pass on an answer nobody will read."""
        self.check_query(query)
        self.check_documents(texts)
        if not texts:
            return []
        batcher = self.model()
        job = asyncio.ensure_future(batcher.score([(query, t) for t in texts]))
        try:
            return await asyncio.wait_for(_unless_gone(job, request), self.config.request_timeout)
        except Overloaded:
            raise HTTPException(503, "the rerank queue is full; retry shortly", {"Retry-After": "1"}) from None
        except asyncio.TimeoutError:
            raise HTTPException(504, f"reranking took longer than {self.config.request_timeout}s (--timeout)") from None
        except ClientGone:
            raise HTTPException(499, "the client closed the connection before the answer was ready") from None
        finally:
            job.cancel()  # no-op when done; otherwise the batcher skips it

    def model(self) -> Batcher:
        if self.load_error:
            raise HTTPException(500, f"the model failed to load: {self.load_error}")
        if not self.ready or self.batcher is None:
            raise HTTPException(503, "the model is still loading; retry shortly (GET /ready)", {"Retry-After": "2"})
        return self.batcher

    def check_query(self, query: str) -> None:
        """Empty, too many characters or too many of the model's tokens: refused before any work."""
        try:
            check_query(query)
        except ValueError as error:
            raise HTTPException(422, str(error)) from None
        limit = self.config.max_query_chars
        if len(query) > limit:
            raise HTTPException(413, f"the query has {len(query)} characters; the limit is {limit} (--max-query-chars)")
        if self.reranker is not None and hasattr(self.reranker, "token_count"):
            tokens, limit = self.reranker.token_count(query), self.config.max_query_tokens
            if tokens > limit:
                raise HTTPException(413, f"the query is {tokens} tokens; the limit is {limit} (--max-query-tokens)")

    def check_documents(self, texts: list[str]) -> None:
        """Per request, before batching: one bad request must not fail a shared model pass."""
        config = self.config
        if len(texts) > config.max_documents:
            raise HTTPException(
                413, f"{len(texts)} documents; the limit is {config.max_documents} per request (--max-documents)"
            )
        for i, text in enumerate(texts):
            try:
                check_passage(text, f"document {i}")
            except ValueError as error:
                raise HTTPException(422, str(error)) from None
            if len(text) > config.max_document_chars:
                raise HTTPException(
                    413,
                    f"document {i} has {len(text)} characters; the limit is {config.max_document_chars} "
                    "(--max-document-chars)",
                )


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


async def _unless_gone(job: asyncio.Future, request: Request | None) -> list[float]:
    """``job``'s result, unless the client disconnects first (then ClientGone)."""
    while request is not None and not job.done():
        await asyncio.wait([job], timeout=0.05)
        if not job.done() and await request.is_disconnected():
            raise ClientGone
    return await job


def state_of(request: Request) -> ServerState:
    return request.app.state.server


def authorize(request: Request) -> None:
    """``Authorization: Bearer <key>`` when the server has a key."""
    key = state_of(request).config.api_key
    if key is None:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token or not hmac.compare_digest(token.encode(), key.encode()):
        raise HTTPException(
            401, "missing or wrong API key: send 'Authorization: Bearer <key>'", {"WWW-Authenticate": "Bearer"}
        )
