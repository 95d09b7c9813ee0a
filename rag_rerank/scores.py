"""What a score means. Every ranked ``Document`` says which kind of score it carries
(``Document.score_kind``), because a threshold on one kind means nothing on another:

| kind | who sets it | range |
|---|---|---|
| ``cosine`` | the bi-encoder (``ChromaStore.query``, ``retrieve(mode="dense")``) | -1..1 |
| ``bm25`` | ``retrieve(mode="lexical")``: BM25 of the whole document | 0.., per collection |
| ``fused`` | ``retrieve(mode="hybrid")``, weighted fusion of min-max scaled scores | 0..1, per query |
| ``rrf`` | ``retrieve(mode="hybrid", fusion_method="rrf")`` | 0..2/61 |
| ``logit`` | ``CrossEncoderReranker`` (plus its first-stage term in ``rerank``) | any real |
| ``probability`` | ``CrossEncoderReranker(normalize=True)``: the sigmoid of the above | 0..1 |
| ``rating`` | ``PointwiseLLMReranker``: the LLM's rating (unrated documents below 0) | 0..10 |
| ``position`` | ``ListwiseLLMReranker``: ``1 - rank / n`` from the LLM's order | 0..1 |

``relevance`` maps a reranker's score to 0..1 (higher is more relevant), the scale LangChain's
and LlamaIndex's rerankers report (``relevance_score``, as langchain-cohere's is).
"""

from __future__ import annotations

import math

RATING_SCALE = 10.0


def sigmoid(x: float) -> float:
    """A logit mapped to 0..1, without overflow."""
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def relevance(score: float, kind: str | None) -> float:
    """A reranker's score on a 0..1 scale (higher is more relevant).

    Args:
        score: The score.
        kind: Its ``Document.score_kind``: a logit goes through the sigmoid, a rating is divided
            by its scale, a probability, position or fused score stays as it is; ``None`` (a
            reranker of your own that does not say) passes through unchanged.

    Returns:
        The score on 0..1.

    Raises:
        ValueError: a first-stage kind ("cosine", "bm25", "rrf"), which has no such scale.
    """
    if kind is None:
        return score
    if kind == "logit":
        return sigmoid(score)
    if kind == "rating":
        return min(1.0, max(0.0, score / RATING_SCALE))
    if kind in ("probability", "position", "fused"):
        return min(1.0, max(0.0, score))
    raise ValueError(f"a {kind!r} score has no 0..1 relevance scale; relevance() is for rerankers' scores")
