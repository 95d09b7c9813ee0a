"""LLM rerankers: pointwise relevance ratings and RankGPT-style listwise permutations.

Any LLM works through the two-method ``LLM`` protocol; the LangChain and LlamaIndex
packages wrap their chat models / LLMs in it (``LangChainLLM``, ``LlamaIndexLLM``).
Whatever the LLM answers (malformed, partial, repeated or out-of-range ids, refusals,
errors, timeouts) the result holds every input document exactly once; documents the LLM
did not rank keep their previous relative order after the ranked ones, and each such
fallback is reported in ``LLMRerankResult.fallbacks`` and logged, never silent.

One module per job: ``protocol`` (the ``LLM`` an LLM reranker calls, what calls cost), ``cache``,
``base`` (what both rerankers share), ``pointwise`` and ``listwise`` (each with its answer parser).
"""

from rag_rerank.rerank.llm.cache import JudgementCache
from rag_rerank.rerank.llm.listwise import LISTWISE_PROMPT, ListwiseLLMReranker, parse_permutation, windows
from rag_rerank.rerank.llm.pointwise import POINTWISE_PROMPT, PointwiseLLMReranker, parse_rating
from rag_rerank.rerank.llm.protocol import LLM, LLMCall, LLMRerankResult

__all__ = [
    "LISTWISE_PROMPT",
    "LLM",
    "POINTWISE_PROMPT",
    "JudgementCache",
    "LLMCall",
    "LLMRerankResult",
    "ListwiseLLMReranker",
    "PointwiseLLMReranker",
    "parse_permutation",
    "parse_rating",
    "windows",
]
