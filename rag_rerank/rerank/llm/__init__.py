"""LLM rerankers: query likelihood and yes/no (read from the LLM's probabilities), pointwise relevance
ratings and RankGPT-style listwise permutations (read from its text).

The probability readers need a ``ScoringLLM``: a local model (``rag_rerank.inference.llm``) or an
OpenAI-compatible server with logprobs. Any LLM works for the text readers through the two-method ``LLM`` protocol; the LangChain and LlamaIndex
packages wrap their chat models / LLMs in it (``LangChainLLM``, ``LlamaIndexLLM``).
Whatever the LLM answers (malformed, partial, repeated or out-of-range ids, refusals,
errors, timeouts) the result holds every input document exactly once; documents the LLM
did not rank keep their previous relative order after the ranked ones, and each such
fallback is reported in ``LLMRerankResult.fallbacks`` and logged, never silent.

One module per job: ``protocol`` (what an LLM reranker calls, what calls cost), ``cache``, ``base``
(what every LLM reranker shares), ``logprob`` (what the probability readers share), one module per
reranker (``query_likelihood``, ``yes_no``, ``pointwise``, ``listwise``), ``kinds`` (them by name).
"""

from rag_rerank.rerank.llm.cache import JudgementCache
from rag_rerank.rerank.llm.listwise import LISTWISE_PROMPT, ListwiseLLMReranker, parse_permutation, windows
from rag_rerank.rerank.llm.pointwise import POINTWISE_PROMPT, PointwiseLLMReranker, parse_rating
from rag_rerank.rerank.llm.protocol import LLM, LLMCall, LLMRerankResult, ScoringLLM, ScoringUnsupported
from rag_rerank.rerank.llm.query_likelihood import FUSION_WEIGHT, QUERY_LIKELIHOOD_PROMPT, QueryLikelihoodReranker
from rag_rerank.rerank.llm.yes_no import YES_NO_PROMPT, YesNoLLMReranker

__all__ = [
    "FUSION_WEIGHT",
    "LISTWISE_PROMPT",
    "LLM",
    "POINTWISE_PROMPT",
    "QUERY_LIKELIHOOD_PROMPT",
    "YES_NO_PROMPT",
    "JudgementCache",
    "LLMCall",
    "LLMRerankResult",
    "ListwiseLLMReranker",
    "PointwiseLLMReranker",
    "QueryLikelihoodReranker",
    "ScoringLLM",
    "ScoringUnsupported",
    "YesNoLLMReranker",
    "parse_permutation",
    "parse_rating",
    "windows",
]
