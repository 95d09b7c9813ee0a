"""For operators: liveness (``/health``, always open), readiness (``/ready``: 200 once the model is
loaded and warmed up, 503 before) and Prometheus metrics (``/metrics``, behind the key with
``--metrics-need-key``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import PlainTextResponse

from rag_rerank.serve.state import authorize, state_of

router = APIRouter()


@router.get("/health", summary="Liveness: the process answers")
async def health(request: Request) -> dict[str, Any]:
    state = state_of(request)
    config = state.config
    return {
        "status": "ok",
        "ready": state.ready,
        "model": state.model_name,
        "backend": getattr(state.reranker, "backend", config.backend),
        "dtype": getattr(state.reranker, "dtype", config.dtype),
        "compiled": config.compile,
        "queue": state.metrics.queue_depth(),
    }


@router.get("/ready", summary="Readiness: the model is loaded and warmed up")
async def ready(request: Request) -> dict[str, Any]:
    state = state_of(request)
    if state.load_error:
        raise HTTPException(500, f"the model failed to load: {state.load_error}")
    if not state.ready:
        raise HTTPException(503, "the model is still loading", {"Retry-After": "2"})
    return {"status": "ready", "model": state.model_name}


@router.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
async def metrics(request: Request) -> str:
    state = state_of(request)
    if state.config.metrics_need_key:
        authorize(request)
    return state.metrics.render()
