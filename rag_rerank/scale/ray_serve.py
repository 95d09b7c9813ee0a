"""The reranker as a Ray Serve deployment: replicas are the knob, and ``@serve.batch`` gathers the
requests that arrive together into one model pass.

It speaks the rerank shapes of ``rag-rerank serve``: Cohere v1/v2 (``POST /v1/rerank``,
``/v2/rerank``) and Hugging Face TEI (``POST /rerank``), scoring the documents as given (the
cross-encoder's logit; Cohere's ``relevance_score`` its sigmoid). Retrieval and chat stay with
``rag-rerank serve``; this is the part that needs many replicas. Needs ``rag-rerank[ray]``.
"""

import asyncio  # no `from __future__ import annotations`: Serve's ingress wrapper hides this module's names from FastAPI
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, HTTPException, Response
from ray import serve

from rag_rerank.rerank.base import check_passage, check_query
from rag_rerank.rerank.cross_encoder import CrossEncoderReranker
from rag_rerank.scale.runtime import actor_threads, start_ray
from rag_rerank.serve.batcher import split_by_sizes
from rag_rerank.serve.rerank_routes import cohere_response, tei_response
from rag_rerank.serve.schemas import CohereRerankRequest, TEIRerankRequest

app = FastAPI(title="rag-rerank on Ray Serve")


@serve.deployment(max_ongoing_requests=32)  # room for two full batches per replica
@serve.ingress(app)
class RerankDeployment:
    """One replica: its own reranker, loaded once; concurrent requests scored in one batch."""

    def __init__(self, make_reranker: Callable[[], CrossEncoderReranker], cpus: float = 1, max_documents: int = 1000):
        actor_threads(cpus)
        self.reranker = make_reranker()
        self.model_name = self.reranker.model_name
        self.max_documents = max_documents

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def _logits(self, requests: list[tuple[str, list[str]]]) -> list[list[float]]:
        pairs = [(query, text) for query, texts in requests for text in texts]
        flat = await asyncio.to_thread(self.reranker.score_pairs, pairs, logits=True) if pairs else []
        return split_by_sizes(flat, [len(texts) for _, texts in requests])

    async def _scored(self, query: str, texts: list[str], response: Response) -> tuple[list[float], int]:
        """The texts' logits, after the request's checks, and how many texts the model reads only in
        part (also said in the ``X-Truncated-Documents`` header, as ``rag-rerank serve`` does)."""
        try:
            check_query(query)
            for i, text in enumerate(texts):
                check_passage(text, f"document {i}")
        except (TypeError, ValueError) as error:
            raise HTTPException(400, str(error)) from None
        if len(texts) > self.max_documents:
            raise HTTPException(413, f"{len(texts)} documents; this deployment takes at most {self.max_documents}")
        lengths = await asyncio.to_thread(self.reranker.pair_lengths, [(query, text) for text in texts])
        cut = sum(n > self.reranker.max_length for n in lengths)
        response.headers["X-Truncated-Documents"] = str(cut)
        return (await self._logits((query, texts)) if texts else []), cut

    @app.post("/v1/rerank")
    async def rerank_v1(self, body: CohereRerankRequest, response: Response) -> dict[str, Any]:
        return await self._cohere(body, "1", response)

    @app.post("/v2/rerank")
    async def rerank_v2(self, body: CohereRerankRequest, response: Response) -> dict[str, Any]:
        return await self._cohere(body, "2", response)

    @app.post("/rerank")
    async def rerank_tei(self, body: TEIRerankRequest, response: Response) -> list[dict[str, Any]]:
        logits, _ = await self._scored(body.query, body.texts, response)
        return tei_response(body, logits)

    @app.get("/health")
    async def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "model": self.model_name,
            "backend": self.reranker.backend,
            "dtype": self.reranker.dtype,
        }

    async def _cohere(self, body: CohereRerankRequest, version: str, response: Response) -> dict[str, Any]:
        texts = [d if isinstance(d, str) else d.text for d in body.documents]
        logits, cut = await self._scored(body.query, texts, response)
        return cohere_response(body, texts, logits, version, self.model_name, cut)


def rerank_app(
    make_reranker: Callable[[], CrossEncoderReranker],
    *,
    replicas: int = 1,
    cpus_per_replica: float = 1,
    max_documents: int = 1000,
) -> Any:
    """The deployment, bound: ``serve.run(rerank_app(...))`` starts it (``replicas`` copies)."""
    if not isinstance(replicas, int) or replicas < 1:
        raise ValueError(f"replicas must be a positive integer, got {replicas!r}")
    return RerankDeployment.options(  # type: ignore[attr-defined]
        num_replicas=replicas, ray_actor_options={"num_cpus": cpus_per_replica}
    ).bind(make_reranker, cpus_per_replica, max_documents)


def run(
    make_reranker: Callable[[], CrossEncoderReranker],
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    replicas: int = 1,
    cpus_per_replica: float = 1,
    address: str | None = None,
    blocking: bool = True,
) -> Any:
    """Start Ray (or join ``address``), Serve's HTTP proxy on ``host:port``, and the deployment."""
    start_ray(address)
    serve.start(http_options={"host": host, "port": port})
    application = rerank_app(make_reranker, replicas=replicas, cpus_per_replica=cpus_per_replica)
    return serve.run(application, name="rag-rerank", route_prefix="/", blocking=blocking)
