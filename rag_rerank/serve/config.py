"""Every setting of the server, each declared once: ``rag-rerank serve`` reads it from its flag
(``--max-documents``) or its environment variable (``RAG_RERANK_MAX_DOCUMENTS``), both made from
the field (``rag_rerank.settings``)."""

from __future__ import annotations

from dataclasses import dataclass

from rag_rerank.inference.backend import BackendName, Dtype
from rag_rerank.models import DEFAULT_BI_ENCODER, DEFAULT_CROSS_ENCODER
from rag_rerank.retrieval.embedding import BiEncoderBackend, BiEncoderDtype
from rag_rerank.settings import setting

# The settings every command that opens a store shares (``rag-rerank ingest``, ``query``, ``eval``...).
STORE_SETTINGS = (
    "collection",
    "chroma_path",
    "chroma_host",
    "chroma_port",
    "bi_encoder",
    "bi_encoder_backend",
    "bi_encoder_dtype",
    "device",
)


@dataclass
class ServerConfig:
    """The server's settings (``rag-rerank serve --help`` lists them with their variables)."""

    cross_encoder: str | None = setting(
        None, f"cross-encoder name or local path (default {DEFAULT_CROSS_ENCODER}; offline, the shipped model)"
    )
    backend: BackendName = setting(
        "auto", "scoring backend (auto: the fastest that keeps rankings on this machine, logged at start)"
    )
    dtype: Dtype | None = setting(None, "torch or OpenVINO precision (default: auto's choice, or float32)")
    compile: bool = setting(False, "torch.compile the torch backends at startup (slower start)")
    cache_size: int = setting(0, "(query, passage) scores kept in memory")
    device: str | None = setting(None, "cpu, cuda or mps (default: the best available)")
    collection: str = setting("rag_rerank", "Chroma collection (for /v1/retrieve and /v1/query: the default one)")
    collections: list[str] = setting(
        [],
        "another collection requests may name (repeatable; --collection is always served)",
        flag="--serve-collection",
        env="SERVE_COLLECTIONS",
    )
    serve_existing_collections: bool = setting(
        False, "serve any collection that already exists in Chroma (never creates one)"
    )
    chroma_path: str = setting(".chroma", "folder of the embedded Chroma")
    chroma_host: str | None = setting(None, "a Chroma server's host (instead of the embedded Chroma)")
    chroma_port: int = setting(8000, "that Chroma server's port")
    bi_encoder: str = setting(DEFAULT_BI_ENCODER, "bi-encoder name or local path")
    bi_encoder_backend: BiEncoderBackend = setting("auto", "bi-encoder backend (auto: chosen for this machine, logged)")
    bi_encoder_dtype: BiEncoderDtype | None = setting(
        None, "bi-encoder precision (default: auto's choice; int8 needs --bi-encoder-backend openvino)"
    )
    api_key: str | None = setting(None, "require 'Authorization: Bearer KEY'")
    metrics_need_key: bool = setting(False, "/metrics requires the API key too (/health and /ready stay open)")
    max_documents: int = setting(1000, "documents per request")
    max_document_chars: int = setting(50_000, "characters per document")
    max_query_chars: int = setting(4000, "characters per query")
    max_query_tokens: int = setting(256, "model tokens per query")
    max_request_bytes: int = setting(10_000_000, "bytes per request body")
    max_batch_pairs: int = setting(256, "(query, passage) pairs per model pass")
    max_queue: int = setting(256, "waiting requests before 503")
    request_timeout: float = setting(
        30.0, "seconds per request (reranking, or the LLM's silence) before 504", flag="--timeout", env="TIMEOUT"
    )
    llm_base_url: str | None = setting(None, "OpenAI-compatible endpoint for /v1/query")
    llm_model: str | None = setting(None, "model name at that endpoint")
    llm_api_key: str | None = setting(None, "API key for that endpoint")
    llm_max_tokens: int = setting(
        256,
        "longest /v1/query answer in tokens, sent as max_tokens (a few cited sentences; without a limit a "
        "small model can write until its context is full and a CPU LLM runs past --timeout)",
    )
    max_context_tokens: int = setting(3000, "tokens of retrieved context in a /v1/query prompt")

    def check(self) -> None:
        """Refuse settings that would make the server unsafe or useless, before it starts."""
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError(
                "the API key is empty (RAG_RERANK_API_KEY='' or --api-key ''): that would accept a bare "
                "'Bearer' header. Set a real key, or unset it to run without authentication."
            )
        if self.metrics_need_key and self.api_key is None:
            raise ValueError("--metrics-need-key needs an API key (--api-key or RAG_RERANK_API_KEY)")
        for name in (
            "max_documents",
            "max_document_chars",
            "max_query_chars",
            "max_query_tokens",
            "max_request_bytes",
            "llm_max_tokens",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")

    @property
    def served_collections(self) -> list[str]:
        return list(dict.fromkeys([self.collection, *self.collections]))
