"""Query-likelihood reranking (Zhuang et al., "Open-source large language models are strong zero-shot
query likelihood models for document ranking", EMNLP Findings 2023): a document is as good as the
log-probability the LLM gives the query after reading it, fused with the first-stage score."""

from __future__ import annotations

from typing import Any

from rag_rerank.document import Document
from rag_rerank.rerank.llm.logprob import LogprobReranker
from rag_rerank.rerank.llm.protocol import ScoringLLM
from rag_rerank.retrieval.fusion import with_first_stage

QUERY_LIKELIHOOD_PROMPT = (
    "Generate a question that is the most relevant to the given document. The document: {passage} "
    "Here is a generated relevant question:"
)
# The LLM's share of the fused score, chosen on training queries only (docs/how-to/llm-reranking.md
# says which, and what each weight gave); 1.0 ranks by the query likelihood alone.
FUSION_WEIGHT = 0.4


class QueryLikelihoodReranker(LogprobReranker):
    """Ranks by ``weight * minmax(log P(query | prompt with document)) + (1 - weight) * minmax(first stage)``.

    The first-stage score is each document's ``score`` as retrieved; documents without one (plain
    strings) count by their position, best first. Scores are of kind ``fused`` (0..1, per query).

    Args:
        llm: A ``ScoringLLM``: ``TransformersLM`` (a base model reads best: ``gemma-3-270m``) or
            ``OpenAIServerLLM`` over a server with ``/v1/completions`` echo and logprobs.
        weight: The LLM's share of the fused score (0..1).
        prompt: The template, with ``{passage}``; the query follows it after a space.
        options: ``max_passage_tokens``, ``timeout`` (for the whole rerank), ``cache``, ``encoding``,
            ``batch_size``: as ``LogprobReranker`` takes them.
    """

    kind = "fused"
    name = "query-likelihood"

    def __init__(
        self,
        llm: ScoringLLM,
        *,
        weight: float = FUSION_WEIGHT,
        prompt: str = QUERY_LIKELIHOOD_PROMPT,
        **options: Any,
    ):
        if "{passage}" not in prompt:
            raise ValueError("the query-likelihood prompt needs a {passage} field")
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"weight must be between 0 and 1, got {weight}")
        super().__init__(llm, prompt=prompt, **options)
        self.weight = weight

    def _score(self, query: str, prompts: list[str]) -> list[float]:
        return self.llm.continuation_logprobs([p.rstrip() for p in prompts], " " + query.strip())

    def _final(self, documents: list[Document], scores: list[float | None]) -> list[float | None]:
        return with_first_stage(scores, [doc.score for doc in documents], self.weight)
