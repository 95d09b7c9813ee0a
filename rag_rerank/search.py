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
    """Both stages: the store's first stage, then (optionally) a reranker over its candidates.

    Args:
        store: The store to search.
        query: The question or search text.
        k: How many documents to return.
        reranker: Any ``Reranker``; None returns the first stage's top ``k``.
        fetch_k: First-stage candidates the reranker reorders (at least ``k``).
        where: A Chroma metadata filter.
        mode: The first stage (``ChromaStore.retrieve``): "hybrid", "dense" or "lexical".
        chunks: Rank raw chunks instead of whole documents.

    Returns:
        ``(document, first-stage score)`` pairs, best first; each document's ``score`` is the
        reranker's where there is one.
    """
    if reranker is None:
        return [
            (doc, float(doc.score or 0.0)) for doc in store.retrieve(query, k, mode=mode, where=where, chunks=chunks)
        ]
    candidates = store.retrieve(query, max(k, fetch_k), mode=mode, where=where, chunks=chunks)
    retrieval = {doc.id: float(doc.score or 0.0) for doc in candidates}
    return [(doc, retrieval[doc.id]) for doc in cut(reranker.rerank(query, candidates), top_n=k)]
