"""The rerank endpoints in the shapes clients already speak: Cohere v1/v2 (and Jina), Hugging Face TEI.

They score the documents as given (the cross-encoder's logit; ``relevance_score`` its sigmoid,
0..1, as Cohere documents it), independent of the order of the list.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response

from rag_rerank.reranker import sigmoid
from rag_rerank.server.schemas import CohereRerankRequest, TEIRerankRequest
from rag_rerank.server.state import ServerState, authorize, state_of

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
    if body.truncate is False:  # TEI's contract: refuse what the model would cut, rather than cut it
        _refuse_truncation(state, body.query, body.texts)
    logits = await state.score(body.query, body.texts, request)
    count_truncated(state, body.query, body.texts, response)
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
        scored = [state.reranker.clip(text, body.max_tokens_per_doc) for text in texts]
    logits = await state.score(body.query, scored, request)
    cut = count_truncated(state, body.query, scored, response)
    results = []
    for i in best_first(logits)[: body.top_n]:
        item: dict[str, Any] = {"index": i, "relevance_score": sigmoid(logits[i])}
        if body.return_documents:
            item["document"] = {"text": texts[i]}
        results.append(item)
    return {
        "id": str(uuid.uuid4()),
        "results": results,
        "model": body.model or state.model_name,
        "usage": {"total_tokens": sum(len(t) for t in texts) // 4},
        "meta": {
            "api_version": {"version": version},
            "billed_units": {"search_units": 1},
            **({"warnings": [f"{cut} document(s) longer than the model reads were cut to fit it"]} if cut else {}),
        },
    }


def count_truncated(state: ServerState, query: str, texts: list[str], response: Response) -> int:
    """How many texts the model read only in part; said in the ``X-Truncated-Documents`` header."""
    cut = sum(state.reranker.truncated([(query, text) for text in texts])) if texts else 0
    response.headers["X-Truncated-Documents"] = str(cut)
    return cut


def _refuse_truncation(state: ServerState, query: str, texts: list[str]) -> None:
    state.check_query(query)
    state.check_documents(texts)
    state.model()
    reranker = state.reranker
    limit = reranker.max_length - 3  # [CLS] query [SEP] text [SEP]
    query_tokens = reranker.token_count(query)
    for i, text in enumerate(texts):
        tokens = query_tokens + reranker.token_count(text)
        if tokens > limit:
            raise HTTPException(
                413,
                f"text {i} is {tokens} tokens with the query; the model reads {limit} "
                "(send truncate=true to let it cut the text)",
            )


def best_first(scores: list[float]) -> list[int]:
    """Indices by descending score; ties keep input order."""
    return sorted(range(len(scores)), key=lambda i: -scores[i])
