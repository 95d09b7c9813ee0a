"""Every setting of the server in one place; ``rag-rerank serve`` fills it from flags and ``RAG_RERANK_*``."""

from __future__ import annotations

from dataclasses import dataclass, field

from rag_rerank.models import DEFAULT_BI_ENCODER


@dataclass
class ServerConfig:
    cross_encoder: str | None = None  # None: DEFAULT_CROSS_ENCODER, offline the shipped model
    backend: str = "auto"
    dtype: str | None = None  # None: the backend's choice
    compile: bool = False
    cache_size: int = 0
    device: str | None = None
    collection: str = "rag_rerank"  # the default collection of /v1/retrieve and /v1/query
    collections: list[str] = field(default_factory=list)  # more collections a request may name
    serve_existing_collections: bool = False  # also any collection that already exists in Chroma
    chroma_path: str = ".chroma"
    chroma_host: str | None = None
    chroma_port: int = 8000
    bi_encoder: str = DEFAULT_BI_ENCODER
    api_key: str | None = None
    metrics_need_key: bool = False
    max_documents: int = 1000
    max_document_chars: int = 50_000
    max_query_chars: int = 4000
    max_query_tokens: int = 256
    max_request_bytes: int = 10_000_000
    max_batch_pairs: int = 256
    max_queue: int = 256
    request_timeout: float = 30.0
    llm_base_url: str | None = None
    llm_model: str | None = None
    llm_api_key: str | None = None
    max_context_tokens: int = 3000

    def check(self) -> None:
        """Refuse settings that would make the server unsafe or useless, before it starts."""
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError(
                "the API key is empty (RAG_RERANK_API_KEY='' or --api-key ''): that would accept a bare "
                "'Bearer' header. Set a real key, or unset it to run without authentication."
            )
        if self.metrics_need_key and self.api_key is None:
            raise ValueError("--metrics-need-key needs an API key (--api-key or RAG_RERANK_API_KEY)")
        for name in ("max_documents", "max_document_chars", "max_query_chars", "max_query_tokens", "max_request_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")

    @property
    def served_collections(self) -> list[str]:
        return list(dict.fromkeys([self.collection, *self.collections]))
