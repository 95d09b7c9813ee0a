"""Translation between LangChain documents and rag-rerank documents."""

from __future__ import annotations

from langchain_core.documents import Document as LCDocument

from rag_rerank import Document


def to_core(doc: LCDocument) -> Document:
    return Document(text=doc.page_content, metadata=dict(doc.metadata), id=doc.id)


def to_langchain(doc: Document, **scores: float | None) -> LCDocument:
    """Scores go into metadata: ``retrieval_score`` (the first stage's), ``relevance_score`` (the reranker's)."""
    return LCDocument(page_content=doc.text, metadata={**doc.metadata, **scores}, id=doc.id)
