"""A rerank and RAG server that speaks the APIs clients already use.

- ``POST /v1/rerank``, ``POST /v2/rerank``: Cohere's rerank shape (also Jina's);
  ``relevance_score`` is the sigmoid of the cross-encoder logit, 0..1, as Cohere documents it.
- ``POST /rerank``: Hugging Face TEI's shape (``texts``, ``raw_scores``, ``return_text``, ``truncate``).
- ``POST /v1/retrieve``, ``POST /v1/query``: whole documents from Chroma (hybrid BM25 + bi-encoder
  by default), reranked, and optionally an answer from an OpenAI-compatible chat endpoint, streamed
  as server-sent events.
- ``GET /health`` (liveness), ``GET /ready`` (readiness), ``GET /metrics`` (Prometheus), ``GET /docs``.

One module per concern: ``config`` (every setting), ``state`` (what routes share, the checks),
``batcher`` (one worker feeds the model), ``metrics``, ``schemas`` (request bodies), one module
of routes per group, ``chat`` (generation), ``app`` (wiring, middleware, ``serve``).
"""

from rag_rerank.serve.app import create_app, serve
from rag_rerank.serve.config import ServerConfig

__all__ = ["ServerConfig", "create_app", "serve"]
