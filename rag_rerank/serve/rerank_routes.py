"""The rerank endpoints in the shapes clients already speak: Cohere v1/v2 (and Jina), Hugging Face TEI.

They score the documents as given (the cross-encoder's logit; ``relevance_score`` its sigmoid,
0..1, as Cohere documents it), independent of the order of the list.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response

from rag_rerank.scores import sigmoid
from rag_rerank.serve.schemas import CohereRerankRequest, TEIRerankRequest
from rag_rerank.serve.state import ServerState, authorize, state_of

router = APIRouter(dependencies=[Depends(authorize)])


@router.post("/v1/rerank", summary="Rerank (Cohere v1 / Jina shape)")
async def rerank_v1(body: CohereRerankRequest, request: Request, response: Response) -> dict[str, Any]:
    return await _cohere(state_of(request), body, "1", response, request)


@router.post("/v2/rerank", summary="Rerank (Cohere v2 shape)")
async def rerank_v2(body: CohereRerankRequest, request: Request, response: Response) -> dict[str, Any]:
    return await _cohere(state_of(request), body, "2", response, request)


@router.post("/rerank", summary="Rerank (Hugging Face TEI shape)")
async def rerank_tei(body: TEIRerankRequest, request: Request, response: Response) -> list[dict[str, Any]]:
    state = state_of(request)
    lengths = await _pair_lengths(state, body.query, body.texts)
    if body.truncate is False:  # TEI's contract: refuse what the model would cut, rather than cut it
        _refuse_truncation(state, lengths)
    logits = await state.score(body.query, body.texts, request)
    _say_truncated(state, lengths, response)
    return tei_response(body, logits)


def tei_response(body: TEIRerankRequest, logits: list[float]) -> list[dict[str, Any]]:
    """TEI's rerank response: every text best first, its logit or (by default) sigmoid.
    Shared with the Ray Serve deployment."""
    return [
        {
            "index": i,
            "score": logits[i] if body.raw_scores else sigmoid(logits[i]),
            **({"text": body.texts[i]} if body.return_text else {}),
        }
        for i in best_first(logits)
    ]


async def _cohere(
    state: ServerState, body: CohereRerankRequest, version: str, response: Response, request: Request
) -> dict[str, Any]:
    texts = [d if isinstance(d, str) else d.text for d in body.documents]
    scored = texts
    if body.max_tokens_per_doc is not None:  # Cohere's contract: each document cut to that many tokens
        state.check_documents(texts)
        state.model()  # the tokenizer comes with the model
        clip, limit = state.reranker.clip, body.max_tokens_per_doc
        scored = await asyncio.to_thread(lambda: [clip(text, limit) for text in texts])
    lengths = await _pair_lengths(state, body.query, scored)
    logits = await state.score(body.query, scored, request)
    cut = _say_truncated(state, lengths, response)
    return cohere_response(body, texts, logits, version, state.model_name, cut)


def cohere_response(
    body: CohereRerankRequest, texts: list[str], logits: list[float], version: str, model_name: str | None, cut: int
) -> dict[str, Any]:
    """Cohere's rerank response: the best ``top_n`` with their 0..1 relevance, and a warning if
    ``cut`` documents were longer than the model reads. Shared with the Ray Serve deployment."""
    results = []
    for i in best_first(logits)[: body.top_n]:
        item: dict[str, Any] = {"index": i, "relevance_score": sigmoid(logits[i])}
        if body.return_documents:
            item["document"] = {"text": texts[i]}
        results.append(item)
    return {
        "id": str(uuid.uuid4()),
        "results": results,
        "model": body.model or model_name,
        "usage": {"total_tokens": sum(len(t) for t in texts) // 4},
        "meta": {
            "api_version": {"version": version},
            "billed_units": {"search_units": 1},
            **({"warnings": [f"{cut} document(s) longer than the model reads were cut to fit it"]} if cut else {}),
        },
    }


async def _pair_lengths(state: ServerState, query: str, texts: list[str]) -> list[int]:
    """Each (query, text) pair's length in the model's tokens, measured once per request, after the
    request's checks and off the event loop (tokenising up to 1,000 long documents takes a while)."""
    state.check_query(query)
    state.check_documents(texts)
    if not texts:
        return []
    state.model()  # the tokenizer comes with the model
    return await asyncio.to_thread(state.reranker.pair_lengths, [(query, text) for text in texts])


def _say_truncated(state: ServerState, lengths: list[int], response: Response) -> int:
    """How many texts the model read only in part; said in the ``X-Truncated-Documents`` header."""
    cut = sum(n > state.reranker.max_length for n in lengths)
    response.headers["X-Truncated-Documents"] = str(cut)
    return cut


def _refuse_truncation(state: ServerState, lengths: list[int]) -> None:
    limit = state.reranker.max_length if lengths else 0
    for i, tokens in enumerate(lengths):
        if tokens > limit:
            raise HTTPException(
                413,
                f"text {i} is {tokens} tokens with the query (special tokens included); the model reads {limit} "
                "(send truncate=true to let it cut the text)",
            )


def best_first(scores: list[float]) -> list[int]:
    """Indices by descending score; ties keep input order."""
    return sorted(range(len(scores)), key=lambda i: -scores[i])
