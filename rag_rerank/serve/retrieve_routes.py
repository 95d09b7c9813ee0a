"""Retrieval from Chroma (``/v1/retrieve``) and retrieval-augmented answers (``/v1/query``).

Candidates come from ``ChromaStore.retrieve`` in first-stage order and are reranked with the
model's first-stage weight, as ``CrossEncoderReranker.rerank`` does, so the server's scores are
the library's; the model pass goes through the shared batcher.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import StreamingResponse

from rag_rerank.context import RAG_PROMPT, pack_context
from rag_rerank.document import Document, mark_truncated
from rag_rerank.scores import relevance
from rag_rerank.serve.chat import LLMUnavailable, chat
from rag_rerank.serve.rerank_routes import best_first
from rag_rerank.serve.schemas import QueryRequest, RetrieveRequest
from rag_rerank.serve.state import ServerState, authorize, state_of

router = APIRouter(dependencies=[Depends(authorize)])


@router.post("/v1/retrieve", summary="Retrieve from Chroma and rerank")
async def retrieve_endpoint(body: RetrieveRequest, request: Request) -> dict[str, Any]:
    return {"results": await retrieve(state_of(request), body, request)}


@router.post("/v1/query", summary="Retrieve, rerank and answer (SSE with stream=true)")
async def query_endpoint(body: QueryRequest, request: Request) -> Any:
    state = state_of(request)
    hits = await retrieve(state, body, request)
    if not body.generate:
        return {"answer": None, "sources": hits}
    config = state.config
    if not (config.llm_base_url and config.llm_model):
        raise HTTPException(
            501,
            "no LLM is configured for generation: start the server with --llm-base-url and --llm-model, "
            "or send generate=false",
        )
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
        try:
            answer = "".join([piece async for piece in chat(config, prompt, stream=False)])
        except LLMUnavailable as error:
            raise HTTPException(error.status, str(error)) from None
        return {"answer": answer, "sources": sources}

    async def events() -> AsyncIterator[str]:
        yield f"event: sources\ndata: {json.dumps(sources)}\n\n"
        try:
            async for piece in chat(config, prompt, stream=True):
                yield f"event: token\ndata: {json.dumps({'text': piece})}\n\n"
        except LLMUnavailable as error:  # the stream has started: report the failure in-band
            yield f"event: error\ndata: {json.dumps({'message': str(error), 'status': error.status})}\n\n"
            return
        yield "event: done\ndata: {}\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


async def retrieve(state: ServerState, body: RetrieveRequest, request: Request | None = None) -> list[dict[str, Any]]:
    state.check_query(body.query)
    store = await asyncio.to_thread(state.store, body.collection)
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
    except ValueError as error:  # e.g. a malformed `where`
        raise HTTPException(422, str(error)) from None
    if not body.rerank:
        return [_hit(doc, doc.score, None) for doc in candidates]
    pairs = [(body.query, doc.text) for doc in candidates]
    logits = await state.score(body.query, [doc.text for doc in candidates], request)
    cut = await asyncio.to_thread(state.reranker.truncated, pairs)
    candidates = [mark_truncated(doc, "cross-encoder") if c else doc for doc, c in zip(candidates, cut)]
    fused = [float(x) for x in state.reranker.with_first_stage(logits, [doc.score for doc in candidates])]
    kind = "fused" if state.reranker.fusion_weight is not None else "logit"  # as rerank() would say
    return [_hit(candidates[i], candidates[i].score, relevance(fused[i], kind)) for i in best_first(fused)[: body.k]]


def _hit(doc: Document, retrieval_score: float | None, relevance: float | None) -> dict[str, Any]:
    return {
        "id": doc.id,
        "text": doc.text,
        "metadata": doc.metadata,
        "retrieval_score": retrieval_score,
        "relevance_score": relevance,
    }
