"""Fusing rankings from several first stages (lexical and dense) into one.

Both fusions take rankings best first, as ``(id, score)`` lists, and return one list of
``(id, fused score)``, best first. An id found by only one side still gets in; ties keep
the order in which ids were first seen (first ranking first).

- ``weighted`` (the store's default): min-max normalised scores, ``weight * dense +
  (1 - weight) * lexical``; an id missing from a ranking gets 0 from it (below that
  ranking's last entry). Uses how far apart the scores are, not only their order.
- ``rrf``: reciprocal rank fusion (Cormack et al. 2009), ``sum 1 / (k + rank)``. Needs no
  score scale at all.

A reranker's own scores are fused with the first stage's the same way, one formula for every
reranker that does it (the query-likelihood LLM, a distilled student): ``with_first_stage``.
"""

from __future__ import annotations

from collections.abc import Sequence

Ranking = Sequence[tuple[str, float]]
RRF_K = 60


def rrf(rankings: Sequence[Ranking], k: int = RRF_K) -> list[tuple[str, float]]:
    """Reciprocal rank fusion of ``rankings`` (ranks count from 1)."""
    if k < 0:
        raise ValueError(f"RRF k must be >= 0, got {k}")
    fused: dict[str, float] = {}
    for ranking in rankings:
        for rank, (doc_id, _) in enumerate(ranking, start=1):
            fused[doc_id] = fused.get(doc_id, 0.0) + 1.0 / (k + rank)
    return _best_first(fused)


def weighted(rankings: Sequence[Ranking], weights: Sequence[float]) -> list[tuple[str, float]]:
    """Weighted sum of min-max normalised scores (each ranking scaled to 0..1 on its own)."""
    if len(weights) != len(rankings):
        raise ValueError(f"{len(rankings)} rankings but {len(weights)} weights")
    if any(w < 0 for w in weights) or not any(w > 0 for w in weights):
        raise ValueError(f"weights must be >= 0 and not all 0, got {list(weights)}")
    fused: dict[str, float] = {}
    for ranking, weight in zip(rankings, weights):
        for doc_id, score in normalise(ranking):
            fused[doc_id] = fused.get(doc_id, 0.0) + weight * score
    return _best_first(fused)


def normalise(ranking: Ranking) -> list[tuple[str, float]]:
    """Scores min-max scaled to 0..1; a ranking whose scores are all equal maps to 1."""
    return list(zip([doc_id for doc_id, _ in ranking], minmax([score for _, score in ranking])))


def minmax(scores: Sequence[float]) -> list[float]:
    """``scores`` scaled to 0..1; all 1.0 when they are equal."""
    if not scores:
        return []
    low, high = min(scores), max(scores)
    span = high - low
    return [(score - low) / span if span > 0 else 1.0 for score in scores]


def first_stage_scores(scores: Sequence[float | None]) -> list[float]:
    """The first stage's scores of candidates given best first, min-max scaled; by position
    (``1 - i / n``) where any candidate lacks one (plain strings)."""
    if any(s is None for s in scores):
        n = len(scores)
        return [1 - i / n for i in range(n)]
    return minmax([float(s) for s in scores if s is not None])


def with_first_stage(own: Sequence[float | None], first: Sequence[float | None], weight: float) -> list[float | None]:
    """``weight * minmax(own) + (1 - weight) * first_stage_scores(first)`` for each candidate, given
    in first-stage order; a candidate without its own score (``None``: not scored) stays ``None`` and
    the scaling is over the others.

    Args:
        own: The reranker's score of each candidate (any scale).
        first: Each candidate's first-stage score (``Document.score``), or ``None`` where it has none.
        weight: The reranker's share, 0..1.
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"the fusion weight must be between 0 and 1, got {weight}")
    if len(own) != len(first):
        raise ValueError(f"{len(own)} scores for {len(first)} candidates")
    scaled = iter(minmax([s for s in own if s is not None]))
    return [
        None if s is None else weight * next(scaled) + (1 - weight) * f for s, f in zip(own, first_stage_scores(first))
    ]


def _best_first(fused: dict[str, float]) -> list[tuple[str, float]]:
    order = {doc_id: i for i, doc_id in enumerate(fused)}
    return sorted(fused.items(), key=lambda item: (-item[1], order[item[0]]))
