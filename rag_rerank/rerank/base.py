"""The contract every reranker fulfils (the cross-encoder, the LLM rerankers, your own), and the
checks and cut they share."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from rag_rerank.document import Document, check_text, ids_of


@runtime_checkable
class Reranker(Protocol):
    """Anything that reorders documents for a query and returns every one of them, best
    first, with ``score`` set: the cross-encoder and the LLM rerankers."""

    def rerank(self, query: str, documents: Sequence[Document | str]) -> list[Document]:
        """Every document in ``documents``, best first, each with its score.

        Args:
            query: The question or search text.
            documents: The candidates, best first by the first stage (plain strings are accepted).

        Returns:
            The same documents, reordered, each with ``score`` and ``score_kind`` set.
        """
        ...


def check_query(query: str) -> None:
    """``TypeError``/``ValueError`` naming the fix for a query that is not a str, is blank or is not valid Unicode."""
    check_text(query, "query", "a reranker needs a question or search text")


def check_passage(passage: str, what: str) -> None:
    """As ``check_query``, for the passage ``what`` names ("passage 3")."""
    check_text(passage, what, "a reranker cannot score an empty passage")


def check_returned(candidates: Sequence[Document], ranked: Sequence[Document], what: str) -> None:
    """A reranker gives back exactly the candidates it was given, nothing lost and nothing added;
    ``what`` names the call in the error (the reranker and query, or the file row)."""
    if sorted(ids_of(ranked)) != sorted(ids_of(candidates)):
        raise RuntimeError(f"{what}: the reranker did not return exactly its {len(candidates)} candidates")


def cut(ranked: list[Document], top_n: int | None = None, threshold: float | None = None) -> list[Document]:
    """The documents scoring at least ``threshold``, then the first ``top_n`` of them.

    Args:
        ranked: Documents best first, as a reranker returns them.
        top_n: How many to keep (None: all).
        threshold: The lowest score kept (None: no floor).

    Returns:
        The kept documents, in their order.

    Raises:
        ValueError: ``top_n`` is not a non-negative integer.
    """
    if top_n is not None and (not isinstance(top_n, int) or top_n < 0):
        raise ValueError(f"top_n must be a non-negative integer or None, got {top_n!r}")
    if threshold is not None:
        ranked = [doc for doc in ranked if doc.score is not None and doc.score >= threshold]
    return ranked if top_n is None else ranked[:top_n]
