"""Ranking metrics, per query, following trec_eval's definitions.

A ranking is a list of doc ids, best first; ``gains`` maps doc ids to graded relevance
(0 or absent = not relevant). nDCG uses linear gains (as trec_eval and ranx do); the
binary metrics count a document as relevant when its gain is above 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


def ndcg(ranking: Sequence[str], gains: Mapping[str, int], k: int = 10) -> float:
    ideal = sorted((g for g in gains.values() if g > 0), reverse=True)[:k]
    if not ideal:
        return 0.0
    dcg = sum(gains.get(doc, 0) / math.log2(rank + 2) for rank, doc in enumerate(ranking[:k]))
    idcg = sum(g / math.log2(rank + 2) for rank, g in enumerate(ideal))
    return dcg / idcg


def mrr(ranking: Sequence[str], gains: Mapping[str, int], k: int = 10) -> float:
    for rank, doc in enumerate(ranking[:k], start=1):
        if gains.get(doc, 0) > 0:
            return 1.0 / rank
    return 0.0


def recall(ranking: Sequence[str], gains: Mapping[str, int], k: int = 100) -> float:
    relevant = {doc for doc, g in gains.items() if g > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranking[:k])) / len(relevant)


def average_precision(ranking: Sequence[str], gains: Mapping[str, int], k: int | None = None) -> float:
    relevant = {doc for doc, g in gains.items() if g > 0}
    if not relevant:
        return 0.0
    hits, total = 0, 0.0
    for rank, doc in enumerate(ranking if k is None else ranking[:k], start=1):
        if doc in relevant:
            hits += 1
            total += hits / rank
    return total / len(relevant)


METRICS = {
    "nDCG@10": lambda r, g: ndcg(r, g, 10),
    "MRR@10": lambda r, g: mrr(r, g, 10),
    "Recall@100": lambda r, g: recall(r, g, 100),
    "MAP": lambda r, g: average_precision(r, g),
}


def score_queries(
    run: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]]
) -> dict[str, dict[str, float]]:
    """Each metric of each query of ``qrels`` that has a relevant document: query id -> metric -> value.

    A query missing from ``run`` counts as an empty ranking (scores 0), never skipped.

    Raises:
        ValueError: no query in ``qrels`` has a relevant document.
    """
    judged = [q for q, gains in qrels.items() if any(g > 0 for g in gains.values())]
    if not judged:
        raise ValueError("no query in qrels has a relevant document; nothing to evaluate")
    return {q: {name: metric(list(run.get(q, [])), qrels[q]) for name, metric in METRICS.items()} for q in judged}


def mean_scores(per_query: Mapping[str, Mapping[str, float]], queries: Sequence[str] | None = None) -> dict[str, float]:
    """Each metric averaged over ``queries`` (default: every query of ``per_query``)."""
    chosen = list(per_query) if queries is None else list(queries)
    if not chosen:
        raise ValueError("no query to average over")
    return {name: sum(per_query[q][name] for q in chosen) / len(chosen) for name in METRICS}


def score_run(run: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]]) -> dict[str, float]:
    """Each metric averaged over the queries of ``qrels`` that have a relevant document.

    A query missing from ``run`` counts as an empty ranking (scores 0), never skipped.
    """
    return mean_scores(score_queries(run, qrels))
