"""Two-stage search: the store's first stage (hybrid by default), then (optionally) a reranker over it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rag_rerank.document import Document
from rag_rerank.rerank.base import Reranker, cut

if TYPE_CHECKING:
    from rag_rerank.retrieval.store import ChromaStore, Mode


def two_stage_search(
    store: ChromaStore,
    query: str,
    *,
    k: int,
    reranker: Reranker | None = None,
    fetch_k: int = 100,
    where: dict[str, Any] | None = None,
    mode: Mode = "hybrid",
    chunks: bool = False,
) -> list[tuple[Document, float]]:
    """The best ``k`` documents (each source once; ``chunks=True`` for raw chunks), each with
    its first-stage score (see ``ChromaStore.retrieve`` for what ``mode`` means).

    Without a reranker: the first stage's top ``k``, ``score`` = retrieval score. With one:
    ``max(k, fetch_k)`` candidates reranked in first-stage order, ``score`` = the reranker's.
    """
    if reranker is None:
        return [
            (doc, float(doc.score or 0.0)) for doc in store.retrieve(query, k, mode=mode, where=where, chunks=chunks)
        ]
    candidates = store.retrieve(query, max(k, fetch_k), mode=mode, where=where, chunks=chunks)
    retrieval = {doc.id: float(doc.score or 0.0) for doc in candidates}
    return [(doc, retrieval[doc.id]) for doc in cut(reranker.rerank(query, candidates), top_n=k)]
