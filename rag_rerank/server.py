"""A rerank and RAG server that speaks the APIs clients already use.

- ``POST /v1/rerank``, ``POST /v2/rerank``: Cohere's rerank shape (also Jina's, which is
  the same request with ``model``/``usage`` in the response); ``relevance_score`` is the
  sigmoid of the cross-encoder logit, 0..1, as Cohere documents it.
- ``POST /rerank``: Hugging Face TEI's shape (``texts``, ``raw_scores``, ``return_text``).
- ``POST /v1/retrieve``, ``POST /v1/query``: retrieval of whole documents from Chroma (hybrid
  BM25 + bi-encoder by default: ``mode``, ``fusion``, ``chunks``), reranking, and optional
  generation through an OpenAI-compatible chat endpoint, streamed as server-sent events.
- ``GET /health``, ``GET /metrics`` (Prometheus text), ``GET /docs`` (OpenAPI).

Concurrent requests are batched onto the model by one worker; the queue in front of it
is bounded, and when it is full the server answers 503 with ``Retry-After`` instead of
buffering without limit.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, Field

from rag_rerank.context import RAG_PROMPT, pack_context
from rag_rerank.models import DEFAULT_BI_ENCODER, DEFAULT_CROSS_ENCODER
from rag_rerank.reranker import check_passage, check_query, sigmoid

log = logging.getLogger("rag_rerank.server")


@dataclass
class ServerConfig:
    """Every setting of the server; ``rag-rerank serve`` fills it from flags and ``RAG_RERANK_*``."""

    cross_encoder: str | None = None  # None: DEFAULT_CROSS_ENCODER, offline the shipped model
    backend: str = "torch"
    dtype: str = "float32"
    compile: bool = False
    cache_size: int = 0
    device: str | None = None
    collection: str = "rag_rerank"
    chroma_path: str = ".chroma"
    chroma_host: str | None = None
    chroma_port: int = 8000
    bi_encoder: str = DEFAULT_BI_ENCODER
    api_key: str | None = None
    max_documents: int = 1000
    max_document_chars: int = 50_000
    max_request_bytes: int = 10_000_000
    max_batch_pairs: int = 256
    max_queue: int = 256
    request_timeout: float = 30.0
    llm_base_url: str | None = None
    llm_model: str | None = None
    llm_api_key: str | None = None
    max_context_tokens: int = 3000


class Overloaded(Exception):
    """The queue in front of the model is full."""


class Metrics:
    """Counters and sums in Prometheus' text format, without a client library."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.latency_sum: dict[str, float] = defaultdict(float)
        self.latency_count: dict[str, int] = defaultdict(int)
        self.pairs = 0
        self.batches = 0
        self.rejected = 0
        self.queue_depth: Callable[[], int] = lambda: 0

    def render(self) -> str:
        lines = [
            "# HELP rag_rerank_requests_total HTTP requests by path and status.",
            "# TYPE rag_rerank_requests_total counter",
        ]
        lines += [
            f'rag_rerank_requests_total{{path="{p}",status="{s}"}} {n}' for (p, s), n in sorted(self.requests.items())
        ]
        lines += ["# HELP rag_rerank_request_seconds Request latency.", "# TYPE rag_rerank_request_seconds summary"]
        for path in sorted(self.latency_count):
            lines.append(f'rag_rerank_request_seconds_sum{{path="{path}"}} {self.latency_sum[path]:.6f}')
            lines.append(f'rag_rerank_request_seconds_count{{path="{path}"}} {self.latency_count[path]}')
        lines += [
            "# HELP rag_rerank_pairs_scored_total (query, passage) pairs scored by the model.",
            "# TYPE rag_rerank_pairs_scored_total counter",
            f"rag_rerank_pairs_scored_total {self.pairs}",
            "# HELP rag_rerank_batches_total Model passes (each may serve several requests).",
            "# TYPE rag_rerank_batches_total counter",
            f"rag_rerank_batches_total {self.batches}",
            "# HELP rag_rerank_rejected_total Requests refused with 503 because the queue was full.",
            "# TYPE rag_rerank_rejected_total counter",
            f"rag_rerank_rejected_total {self.rejected}",
            "# HELP rag_rerank_queue_depth Requests waiting for the model.",
            "# TYPE rag_rerank_queue_depth gauge",
            f"rag_rerank_queue_depth {self.queue_depth()}",
        ]
        return "\n".join(lines) + "\n"


class Batcher:
    """One worker feeds the model: it takes every waiting request up to ``max_pairs`` pairs
    and scores them in one pass, so concurrent small requests share batches."""

    def __init__(
        self,
        score_pairs: Callable[[list[tuple[str, str]]], list[float]],
        max_pairs: int,
        max_queue: int,
        metrics: Metrics,
    ):
        self._score_pairs = score_pairs
        self._max_pairs = max_pairs
        self._queue: asyncio.Queue = asyncio.Queue(maxsize=max_queue)
        self._metrics = metrics
        self._task: asyncio.Task | None = None
        metrics.queue_depth = self._queue.qsize

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def score(self, pairs: list[tuple[str, str]]) -> list[float]:
        future = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait((pairs, future))
        except asyncio.QueueFull:
            self._metrics.rejected += 1
            raise Overloaded from None
        return await future

    async def _run(self) -> None:
        while True:
            jobs = [await self._queue.get()]
            size = len(jobs[0][0])
            while size < self._max_pairs and not self._queue.empty():
                job = self._queue.get_nowait()
                jobs.append(job)
                size += len(job[0])
            jobs = [job for job in jobs if not job[1].done()]  # timed-out requests are skipped
            pairs = [pair for job_pairs, _ in jobs for pair in job_pairs]
            try:
                scores = await asyncio.to_thread(self._score_pairs, pairs) if pairs else []
            except Exception as error:  # noqa: BLE001 - a model failure fails the requests, not the worker
                for _, future in jobs:
                    if not future.done():
                        future.set_exception(error)
                continue
            self._metrics.pairs += len(pairs)
            self._metrics.batches += 1
            start = 0
            for job_pairs, future in jobs:
                if not future.done():
                    future.set_result(scores[start : start + len(job_pairs)])
                start += len(job_pairs)


# ---- request and response shapes -------------------------------------------------


class RerankDocument(BaseModel):
    text: str


class CohereRerankRequest(BaseModel):
    """Cohere's v1/v2 (and Jina's) rerank request; unknown fields are accepted and ignored."""

    model: str | None = None
    query: str
    documents: list[str | RerankDocument]
    top_n: int | None = Field(default=None, ge=1)
    return_documents: bool = False
    max_chunks_per_doc: int | None = None
    max_tokens_per_doc: int | None = None


class TEIRerankRequest(BaseModel):
    query: str
    texts: list[str]
    raw_scores: bool = False
    return_text: bool = False
    truncate: bool | None = None


class RetrieveRequest(BaseModel):
    query: str
    collection: str | None = None
    k: int = Field(default=5, ge=1, le=1000)
    fetch_k: int = Field(default=100, ge=1, le=1000)
    where: dict[str, Any] | None = None
    rerank: bool = True
    mode: Literal["hybrid", "dense", "lexical"] = "hybrid"
    fusion: Literal["weighted", "rrf"] = "weighted"
    dense_weight: float = Field(default=0.5, ge=0, le=1)
    chunks: bool = Field(default=False, description="rank raw chunks instead of whole documents")


class QueryRequest(RetrieveRequest):
    generate: bool = True
    stream: bool = False
    max_context_tokens: int | None = Field(default=None, ge=1)


# ---- the application ---------------------------------------------------------------


def create_app(config: ServerConfig, reranker=None) -> FastAPI:
    """The ASGI app. ``reranker`` may be given ready-made (tests, embedding in another app)."""
    from rag_rerank.reranker import CrossEncoderReranker

    reranker = reranker or CrossEncoderReranker(
        config.cross_encoder,
        backend=config.backend,  # type: ignore[arg-type]  # argparse's choices checked it
        dtype=config.dtype,  # type: ignore[arg-type]
        compile=config.compile,
        cache_size=config.cache_size,
        device=config.device,
    )
    model_name = getattr(reranker, "model_name", None) or config.cross_encoder or DEFAULT_CROSS_ENCODER
    metrics = Metrics()
    stores: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # raw logits: the endpoints map them to 0..1 themselves (a normalize=True reranker must not get it twice)
        score_logits = functools.partial(reranker.score_pairs, logits=True)
        app.state.batcher = Batcher(score_logits, config.max_batch_pairs, config.max_queue, metrics)
        app.state.batcher.start()
        log.info(json.dumps({"event": "started", "model": model_name, "backend": config.backend}))
        yield
        await app.state.batcher.stop()
        log.info(json.dumps({"event": "stopped"}))

    app = FastAPI(
        title="rag-rerank",
        version=_version(),
        description="Cross-encoder reranking and two-stage retrieval, with Cohere-, Jina- and TEI-compatible endpoints.",
        lifespan=lifespan,
    )

    @app.middleware("http")
    async def limit_log_and_count(request: Request, call_next):
        started = time.perf_counter()
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > config.max_request_bytes:
            response = _error(
                413, f"request body is {length} bytes; the limit is {config.max_request_bytes} (--max-request-bytes)"
            )
        else:
            response = await call_next(request)
        seconds = time.perf_counter() - started
        metrics.requests[(request.url.path, response.status_code)] += 1
        metrics.latency_sum[request.url.path] += seconds
        metrics.latency_count[request.url.path] += 1
        log.info(
            json.dumps(
                {
                    "event": "request",
                    "method": request.method,
                    "path": request.url.path,
                    "status": response.status_code,
                    "ms": round(seconds * 1000, 1),
                }
            )
        )
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())
        return _error(422, f"invalid request: {problems}")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException):
        return _error(error.status_code, str(error.detail), getattr(error, "headers", None))

    def authorize(request: Request) -> None:
        if config.api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), config.api_key.encode()):
            raise HTTPException(
                401, "missing or wrong API key: send 'Authorization: Bearer <key>'", {"WWW-Authenticate": "Bearer"}
            )

    async def scores_for(query: str, texts: list[str]) -> list[float]:
        _check_payload(query, texts, config)
        if not texts:
            return []
        try:
            return await asyncio.wait_for(app.state.batcher.score([(query, t) for t in texts]), config.request_timeout)
        except Overloaded:
            raise HTTPException(503, "the rerank queue is full; retry shortly", {"Retry-After": "1"}) from None
        except asyncio.TimeoutError:
            raise HTTPException(504, f"reranking took longer than {config.request_timeout}s (--timeout)") from None

    async def cohere_rerank(body: CohereRerankRequest, version: str) -> dict[str, Any]:
        texts = [d if isinstance(d, str) else d.text for d in body.documents]
        logits = await scores_for(body.query, texts)
        order = _best_first(logits)[: body.top_n]
        results = []
        for i in order:
            item: dict[str, Any] = {"index": i, "relevance_score": sigmoid(logits[i])}
            if body.return_documents:
                item["document"] = {"text": texts[i]}
            results.append(item)
        return {
            "id": str(uuid.uuid4()),
            "results": results,
            "model": body.model or model_name,
            "usage": {"total_tokens": sum(len(t) for t in texts) // 4},
            "meta": {"api_version": {"version": version}, "billed_units": {"search_units": 1}},
        }

    @app.post("/v1/rerank", dependencies=[Depends(authorize)], summary="Rerank (Cohere v1 / Jina shape)")
    async def rerank_v1(body: CohereRerankRequest) -> dict[str, Any]:
        return await cohere_rerank(body, "1")

    @app.post("/v2/rerank", dependencies=[Depends(authorize)], summary="Rerank (Cohere v2 shape)")
    async def rerank_v2(body: CohereRerankRequest) -> dict[str, Any]:
        return await cohere_rerank(body, "2")

    @app.post("/rerank", dependencies=[Depends(authorize)], summary="Rerank (Hugging Face TEI shape)")
    async def rerank_tei(body: TEIRerankRequest) -> list[dict[str, Any]]:
        logits = await scores_for(body.query, body.texts)
        order = _best_first(logits)
        return [
            {
                "index": i,
                "score": logits[i] if body.raw_scores else sigmoid(logits[i]),
                **({"text": body.texts[i]} if body.return_text else {}),
            }
            for i in order
        ]

    def store_for(name: str | None):
        from rag_rerank.store import ChromaStore

        name = name or config.collection
        if name not in stores:
            stores[name] = ChromaStore(
                name,
                path=config.chroma_path,
                host=config.chroma_host,
                port=config.chroma_port,
                bi_encoder=config.bi_encoder,
            )
        return stores[name]

    async def retrieve(body: RetrieveRequest) -> list[dict[str, Any]]:
        _check_query(body.query)
        store = await asyncio.to_thread(store_for, body.collection)
        depth = max(body.k, body.fetch_k) if body.rerank else body.k
        try:
            candidates = await asyncio.to_thread(
                store.retrieve,
                body.query,
                depth,
                mode=body.mode,
                where=body.where,
                fusion_method=body.fusion,
                dense_weight=body.dense_weight,
                chunks=body.chunks,
            )
        except ValueError as error:
            raise HTTPException(422, str(error)) from None
        if not body.rerank:
            return [_hit(doc, doc.score, None) for doc in candidates]
        logits = await scores_for(body.query, [doc.text for doc in candidates])
        # candidates come in first-stage order: the same score fusion as CrossEncoderReranker.rerank
        logits = [float(x) for x in reranker.with_first_stage(logits)]
        order = _best_first(logits)[: body.k]
        return [_hit(candidates[i], candidates[i].score, logits[i]) for i in order]

    @app.post("/v1/retrieve", dependencies=[Depends(authorize)], summary="Retrieve from Chroma and rerank")
    async def retrieve_endpoint(body: RetrieveRequest) -> dict[str, Any]:
        return {"results": await retrieve(body)}

    @app.post(
        "/v1/query", dependencies=[Depends(authorize)], summary="Retrieve, rerank and answer (SSE with stream=true)"
    )
    async def query_endpoint(body: QueryRequest):
        hits = await retrieve(body)
        if not body.generate:
            return {"answer": None, "sources": hits}
        if not (config.llm_base_url and config.llm_model):
            raise HTTPException(
                501,
                "no LLM is configured for generation: start the server with --llm-base-url and --llm-model, or send generate=false",
            )
        from rag_rerank.document import Document

        packed = pack_context(
            [Document(h["text"], h["metadata"], id=h["id"]) for h in hits],
            max_tokens=body.max_context_tokens or config.max_context_tokens,
            model=config.llm_model,
        )
        packed_ids = {d.id for d in packed.documents}
        sources = [h for h in hits if h["id"] in packed_ids]
        for number, hit in zip(packed.citations, sources):
            hit["citation"] = number
        prompt = RAG_PROMPT.format(context=packed.text, question=body.query)
        if not body.stream:
            answer = "".join([piece async for piece in _chat(config, prompt, stream=False)])
            return {"answer": answer, "sources": sources}

        async def events() -> AsyncIterator[str]:
            yield f"event: sources\ndata: {json.dumps(sources)}\n\n"
            try:
                async for piece in _chat(config, prompt, stream=True):
                    yield f"event: token\ndata: {json.dumps({'text': piece})}\n\n"
            except Exception as error:  # noqa: BLE001 - the stream has started: report any failure in-band
                yield f"event: error\ndata: {json.dumps({'message': str(error)})}\n\n"
                return
            yield "event: done\ndata: {}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.get("/health", summary="Liveness and the loaded model")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": model_name,
            "backend": config.backend,
            "dtype": config.dtype,
            "compiled": config.compile,
            "queue": metrics.queue_depth(),
        }

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
    async def metrics_endpoint() -> str:
        return metrics.render()

    return app


def _check_query(query: str) -> None:
    try:
        check_query(query)
    except ValueError as error:
        raise HTTPException(422, str(error)) from None


def _check_payload(query: str, texts: list[str], config: ServerConfig) -> None:
    """Per request, before batching: one bad request must not fail a shared model pass."""
    _check_query(query)
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
                f"document {i} has {len(text)} characters; the limit is {config.max_document_chars} (--max-document-chars)",
            )


def _best_first(scores: list[float]) -> list[int]:
    """Indices by descending score; ties keep input order."""
    return sorted(range(len(scores)), key=lambda i: -scores[i])


def _hit(doc, retrieval_score: float | None, logit: float | None) -> dict[str, Any]:
    return {
        "id": doc.id,
        "text": doc.text,
        "metadata": doc.metadata,
        "retrieval_score": retrieval_score,
        "relevance_score": None if logit is None else sigmoid(logit),
    }


async def _chat(config: ServerConfig, prompt: str, *, stream: bool) -> AsyncIterator[str]:
    """One chat completion from an OpenAI-compatible endpoint (OpenAI, vLLM, Ollama's /v1, llama.cpp)."""
    import httpx

    headers = {"Authorization": f"Bearer {config.llm_api_key}"} if config.llm_api_key else {}
    payload = {"model": config.llm_model, "messages": [{"role": "user", "content": prompt}], "stream": stream}
    url = (config.llm_base_url or "").rstrip("/") + "/chat/completions"
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


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
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
