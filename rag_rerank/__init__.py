"""rag-rerank: two-stage retrieval for RAG, a Chroma bi-encoder retriever and a cross-encoder reranker."""

from rag_rerank.allocator import tune_allocator
from rag_rerank.context import RAG_PROMPT, PackedContext, pack_context
from rag_rerank.data import Dataset, load_beir, load_collection, load_cranfield, load_documents, split_queries
from rag_rerank.document import Document
from rag_rerank.evaluation.compare import Comparison, compare
from rag_rerank.inference.cache import CacheNotWritable
from rag_rerank.models import (
    DEFAULT_BI_ENCODER,
    DEFAULT_CROSS_ENCODER,
    ModelNotFoundError,
    default_cross_encoder,
    load_bi_encoder,
    load_cross_encoder,
    resolve_model,
)
from rag_rerank.rerank.base import Reranker, cut
from rag_rerank.rerank.cross_encoder import CrossEncoderReranker
from rag_rerank.rerank.llm import (
    LLM,
    JudgementCache,
    ListwiseLLMReranker,
    LLMRerankResult,
    PointwiseLLMReranker,
)
from rag_rerank.retrieval.chroma_client import StoreUnavailable
from rag_rerank.retrieval.chunking import ChunkSpec, chunk_text, count_tokens
from rag_rerank.retrieval.embedding import BiEncoder
from rag_rerank.retrieval.store import ChromaStore, IngestReport
from rag_rerank.scores import relevance
from rag_rerank.search import two_stage_search

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_BI_ENCODER",
    "DEFAULT_CROSS_ENCODER",
    "LLM",
    "RAG_PROMPT",
    "BiEncoder",
    "CacheNotWritable",
    "ChromaStore",
    "ChunkSpec",
    "Comparison",
    "CrossEncoderReranker",
    "Dataset",
    "Document",
    "IngestReport",
    "JudgementCache",
    "LLMRerankResult",
    "ListwiseLLMReranker",
    "ModelNotFoundError",
    "PackedContext",
    "PointwiseLLMReranker",
    "Reranker",
    "StoreUnavailable",
    "chunk_text",
    "compare",
    "count_tokens",
    "cut",
    "default_cross_encoder",
    "load_beir",
    "load_bi_encoder",
    "load_collection",
    "load_cranfield",
    "load_cross_encoder",
    "load_documents",
    "pack_context",
    "relevance",
    "resolve_model",
    "split_queries",
    "tune_allocator",
    "two_stage_search",
]
