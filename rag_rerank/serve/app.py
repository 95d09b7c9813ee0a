"""The ASGI app: routers over the core, the model loaded in the background, and what every
request goes through (body limit, request id, JSON log line, metrics by route, JSON errors)."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from rag_rerank.inference.backend import NonFiniteOutput
from rag_rerank.retrieval.chroma_client import StoreUnavailable
from rag_rerank.serve import ops_routes, rerank_routes, retrieve_routes
from rag_rerank.serve.batcher import Batcher
from rag_rerank.serve.config import ServerConfig
from rag_rerank.serve.metrics import UNMATCHED, Metrics
from rag_rerank.serve.state import ServerState

log = logging.getLogger("rag_rerank.serve")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def create_app(config: ServerConfig, reranker: Any = None) -> FastAPI:
    """The app. The model is loaded (and compiled, and warmed up) in the background after the
    server starts listening: ``/health`` answers at once, ``/ready`` once the model can serve.
    ``reranker`` may be given ready-made (tests, embedding in another app)."""
    config.check()
    state = ServerState(config, Metrics(), reranker=reranker)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.create_task(_load(state))
        yield
        loading.cancel()
        await asyncio.gather(loading, return_exceptions=True)
        if state.batcher is not None:
            await state.batcher.stop()
        log.info(json.dumps({"event": "stopped"}))

    app = FastAPI(
        title="rag-rerank",
        version=_version(),
        description="Cross-encoder reranking and two-stage retrieval, with Cohere-, Jina- and TEI-compatible endpoints.",
        lifespan=lifespan,
    )
    app.state.server = state
    for router in (rerank_routes.router, retrieve_routes.router, ops_routes.router):
        app.include_router(router)
    app.add_middleware(BodyLimit, max_bytes=config.max_request_bytes)
    app.add_middleware(Observe, state=state)  # added last: the outermost, so it sees every response
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(StoreUnavailable, _store_down)  # type: ignore[arg-type]
    app.add_exception_handler(NonFiniteOutput, _model_fault)  # type: ignore[arg-type]
    return app


async def _load(state: ServerState) -> None:
    """Build the model if it was not given, score one pair (warm-up: first-call costs are paid
    here, not by a user), then start the batcher and declare the server ready."""
    config = state.config
    try:
        if state.reranker is None:
            from rag_rerank.rerank.cross_encoder import CrossEncoderReranker

            state.reranker = await asyncio.to_thread(
                CrossEncoderReranker,
                config.cross_encoder,
                backend=config.backend,
                dtype=config.dtype,
                compile=config.compile,
                cache_size=config.cache_size,
                device=config.device,
            )
        # raw logits: the endpoints map them to 0..1 themselves (a normalize=True reranker must not get it twice)
        score_logits = functools.partial(state.reranker.score_pairs, logits=True)
        await asyncio.to_thread(score_logits, [("warm-up query", "a passage to warm the model up")])
        state.batcher = Batcher(score_logits, config.max_batch_pairs, config.max_queue, state.metrics)
        state.batcher.start()
        state.ready = True
        log.info(
            json.dumps(
                {
                    "event": "ready",
                    "model": state.model_name,
                    "backend": state.reranker.backend,
                    "dtype": state.reranker.dtype,
                }
            )
        )
    except asyncio.CancelledError:
        raise
    except Exception as error:  # noqa: BLE001 - reported by /ready and every model endpoint
        state.load_error = f"{type(error).__name__}: {error}"
        log.error(json.dumps({"event": "model_failed", "error": state.load_error}))


class Observe:
    """A request id (the client's ``X-Request-ID`` if sane), a JSON log line, metrics by route
    template, and a JSON 500 with the request id instead of a bare error page. Plain ASGI (not
    Starlette's BaseHTTPMiddleware, which hides a client's disconnect from the routes)."""

    def __init__(self, app: Any, state: ServerState):
        self.app, self.state = app, state

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        status = 500

        async def send_with_id(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", request_id.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as error:  # any bug becomes a logged, counted 500 with its request id
            log.exception(json.dumps({"event": "error", "request_id": request_id, "error": type(error).__name__}))
            await _json(500, f"internal error (request id {request_id})")(scope, receive, send_with_id)
        route = getattr(scope.get("route"), "path", UNMATCHED)
        seconds = time.perf_counter() - started
        self.state.metrics.observe(route, status, seconds)
        entry = {
            "event": "request",
            "request_id": request_id,
            "method": scope.get("method"),
            "route": route,
            "status": status,
            "ms": round(seconds * 1000, 1),
        }
        (log.error if status >= 500 else log.info)(json.dumps(entry))


class BodyLimit:
    """Refuses bodies over ``max_bytes`` with 413, counting the bytes actually received, so a
    chunked body (no Content-Length) or a lying Content-Length cannot get around the limit."""

    def __init__(self, app: Any, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            return await _json(413, self._message(int(length)))(scope, receive, send)
        body, more = b"", True
        while more:  # read up to the limit (the app would hold the whole body anyway), then replay it
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                return await _json(413, self._message(len(body), at_least=True))(scope, receive, send)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: a disconnect, for streaming responses

        await self.app(scope, replay, send)

    def _message(self, size: int, at_least: bool = False) -> str:
        more = "more than " if at_least else ""
        return f"request body is {more}{size} bytes; the limit is {self.max_bytes} (--max-request-bytes)"


async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())
    return _json(422, f"invalid request: {problems}")


async def _http_error(request: Request, error: HTTPException) -> JSONResponse:
    return _json(error.status_code, str(error.detail), getattr(error, "headers", None))


async def _store_down(request: Request, error: StoreUnavailable) -> JSONResponse:
    return _json(503, str(error), {"Retry-After": "5"})


async def _model_fault(request: Request, error: NonFiniteOutput) -> JSONResponse:
    log.error(json.dumps({"event": "non_finite_scores", "error": str(error)}))
    return _json(500, f"the model gave no usable scores: {error}")


def _json(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"message": message}, status_code=status, headers=headers)


def _version() -> str:
    from rag_rerank import __version__

    return __version__


def serve(config: ServerConfig, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Run with uvicorn until SIGINT/SIGTERM; in-flight requests get time to finish."""
    import uvicorn

    from rag_rerank.allocator import tune_allocator

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    tune_allocator()  # this process is ours: keep freed pages warm for the next batch
    uvicorn.run(create_app(config), host=host, port=port, timeout_graceful_shutdown=30, log_level="info")
