"""Request bodies of the endpoints (FastAPI validates them; /docs shows them)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field, ValidationInfo

from rag_rerank.document import check_unicode
from rag_rerank.retrieval.store import Fusion, Mode


def _valid_unicode(text: str, info: ValidationInfo) -> str:
    check_unicode(text, info.field_name or "text")  # JSON's "\ud800" parses, then breaks the tokenizer
    return text


Text = Annotated[str, AfterValidator(_valid_unicode)]


class RerankDocument(BaseModel):
    text: Text


class CohereRerankRequest(BaseModel):
    """Cohere's v1/v2 (and Jina's) rerank request; unknown fields are accepted and ignored."""

    model: str | None = None
    query: Text
    documents: list[Text | RerankDocument]
    top_n: int | None = Field(default=None, ge=1)
    return_documents: bool = False
    max_chunks_per_doc: int | None = None
    max_tokens_per_doc: int | None = Field(
        default=None, ge=1, description="each document is cut to this many of the model's tokens before scoring"
    )


class TEIRerankRequest(BaseModel):
    query: Text
    texts: list[Text]
    raw_scores: bool = False
    return_text: bool = False
    truncate: bool | None = Field(
        default=None, description="false: a text the model would cut is refused (413); true or unset: it is cut"
    )


class RetrieveRequest(BaseModel):
    query: Text
    collection: str | None = None
    k: int = Field(default=5, ge=1, le=1000)
    fetch_k: int = Field(default=100, ge=1, le=1000)
    where: dict[str, Any] | None = None
    rerank: bool = True
    mode: Mode = "hybrid"
    fusion: Fusion = "weighted"
    dense_weight: float = Field(default=0.5, ge=0, le=1)
    chunks: bool = Field(default=False, description="rank raw chunks instead of whole documents")


class QueryRequest(RetrieveRequest):
    generate: bool = True
    stream: bool = False
    max_context_tokens: int | None = Field(default=None, ge=1)
