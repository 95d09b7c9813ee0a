"""Two-stage search: Chroma's nearest chunks, then (optionally) a reranker over them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rag_rerank.document import Document
from rag_rerank.reranker import Reranker, cut

if TYPE_CHECKING:
    from rag_rerank.store import ChromaStore


def two_stage_search(
    store: ChromaStore,
    query: str,
    *,
    k: int,
    reranker: Reranker | None = None,
    fetch_k: int = 100,
    where: dict[str, Any] | None = None,
) -> list[tuple[Document, float]]:
    """The best ``k`` chunks, each with its retrieval score (cosine similarity).

    Without a reranker: the ``k`` nearest chunks, ``score`` = retrieval score. With one:
    ``max(k, fetch_k)`` candidates reranked, ``score`` = the reranker's score.
    """
    if reranker is None:
        return [(doc, doc.score) for doc in store.query(query, k=k, where=where)]
    candidates = store.query(query, k=max(k, fetch_k), where=where)
    retrieval = {doc.id: doc.score for doc in candidates}
    return [(doc, retrieval[doc.id]) for doc in cut(reranker.rerank(query, candidates), top_n=k)]
