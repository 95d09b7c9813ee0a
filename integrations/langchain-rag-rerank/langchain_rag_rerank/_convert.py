"""Translation between LangChain documents and rag-rerank documents."""

from __future__ import annotations

from langchain_core.documents import Document as LCDocument

from rag_rerank import Document, relevance


def to_core(doc: LCDocument) -> Document:
    return Document(text=doc.page_content, metadata=dict(doc.metadata), id=doc.id)


def to_langchain(doc: Document, **scores: float | str | None) -> LCDocument:
    """Scores go into metadata: ``retrieval_score`` (the first stage's) and ``reranked_scores``."""
    return LCDocument(page_content=doc.text, metadata={**doc.metadata, **scores}, id=doc.id)


def reranked_scores(doc: Document) -> dict[str, float | str | None]:
    """``relevance_score`` on LangChain's 0..1 scale, the reranker's own score and its kind."""
    assert doc.score is not None, "a reranked document has a score"
    return {
        "relevance_score": relevance(doc.score, doc.score_kind),
        "rerank_score": doc.score,
        "score_kind": doc.score_kind,
    }
