"""Fusing rankings from several first stages (lexical and dense) into one.

Both fusions take rankings best first, as ``(id, score)`` lists, and return one list of
``(id, fused score)``, best first. An id found by only one side still gets in; ties keep
the order in which ids were first seen (first ranking first).

- ``weighted`` (the store's default): min-max normalised scores, ``weight * dense +
  (1 - weight) * lexical``; an id missing from a ranking gets 0 from it (below that
  ranking's last entry). Uses how far apart the scores are, not only their order.
- ``rrf``: reciprocal rank fusion (Cormack et al. 2009), ``sum 1 / (k + rank)``. Needs no
  score scale at all.
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


def _best_first(fused: dict[str, float]) -> list[tuple[str, float]]:
    order = {doc_id: i for i, doc_id in enumerate(fused)}
    return sorted(fused.items(), key=lambda item: (-item[1], order[item[0]]))
