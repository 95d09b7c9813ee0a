"""Is a difference between two systems on the same queries real, or chance?

Both systems are scored per query; the difference of their means gets a 95% confidence interval
from a paired bootstrap over queries and a p-value from a two-sided paired randomization test
(Fisher's, as Smucker et al. recommend for IR evaluation; ranx calls it "fisher"). Every random
draw comes from a seeded generator, and the seed is part of the result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

SEED = 0
RESAMPLES = 10_000  # bootstrap resamples of the queries
PERMUTATIONS = 10_000  # random sign flips of the per-query differences
ALPHA = 0.05  # a difference with p below this reads as significant


@dataclass(frozen=True)
class Difference:
    """``system`` minus ``baseline`` in ``metric``, mean over ``queries`` paired queries."""

    system: str
    baseline: str
    metric: str
    queries: int
    mean: float
    low: float  # the 95% confidence interval of the mean difference (paired bootstrap)
    high: float
    p_value: float  # two-sided paired randomization test
    seed: int
    resamples: int
    permutations: int

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA

    def label(self) -> str:
        """``+0.012 [+0.004, +0.020] p=0.003`` (``p<0.001`` below that), or ``... (not significant)``."""
        p = "p<0.001" if self.p_value < 0.001 else f"p={self.p_value:.3f}"
        said = f"{self.mean:+.3f} [{self.low:+.3f}, {self.high:+.3f}] {p}"
        return said if self.significant else f"{said} (not significant)"

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "significant": self.significant}


def compare_paired(
    system: str,
    baseline: str,
    metric: str,
    scores: Mapping[str, float],
    baseline_scores: Mapping[str, float],
    *,
    seed: int = SEED,
    resamples: int = RESAMPLES,
    permutations: int = PERMUTATIONS,
) -> Difference:
    """The difference of two systems' per-query scores on the queries both were scored on.

    Args:
        system, baseline: Their names.
        metric: What the scores are ("nDCG@10").
        scores, baseline_scores: Query id -> that query's score, for each system.
        seed: Seeds the bootstrap and the permutations (each its own stream).
        resamples, permutations: How many of each.

    Returns:
        The mean difference, its 95% interval and the p-value.

    Raises:
        ValueError: the two systems share no query.
    """
    queries = sorted(set(scores) & set(baseline_scores))
    if not queries:
        raise ValueError(f"{system!r} and {baseline!r} share no query: nothing to compare")
    differences = np.array([scores[q] - baseline_scores[q] for q in queries], dtype=np.float64)
    low, high = bootstrap_interval(differences, seed=seed, resamples=resamples)
    return Difference(
        system,
        baseline,
        metric,
        len(queries),
        float(differences.mean()),
        low,
        high,
        randomization_p_value(differences, seed=seed, permutations=permutations),
        seed,
        resamples,
        permutations,
    )


def bootstrap_interval(
    differences: Sequence[float] | np.ndarray, *, seed: int = SEED, resamples: int = RESAMPLES
) -> tuple[float, float]:
    """The 95% percentile interval of the mean of ``differences``, the queries resampled with replacement."""
    values = np.asarray(differences, dtype=np.float64)
    rng = np.random.default_rng([seed, 1])
    means = np.empty(resamples)
    for start in range(0, resamples, 1000):  # in blocks: bounded memory for large query sets
        block = min(1000, resamples - start)
        means[start : start + block] = values[rng.integers(0, len(values), size=(block, len(values)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def randomization_p_value(
    differences: Sequence[float] | np.ndarray, *, seed: int = SEED, permutations: int = PERMUTATIONS
) -> float:
    """Two-sided p-value of a mean difference of 0: each query's two scores swapped at random (its
    difference's sign flipped), counting the shuffles whose mean is at least as far from 0. The
    observed assignment counts as one of them, so p is never 0."""
    values = np.asarray(differences, dtype=np.float64)
    observed = abs(values.mean())
    rng = np.random.default_rng([seed, 2])
    extreme = 0
    for start in range(0, permutations, 1000):
        block = min(1000, permutations - start)
        signs = rng.choice(np.array([-1.0, 1.0]), size=(block, len(values)))
        extreme += int((np.abs((signs * values).mean(axis=1)) >= observed - 1e-12).sum())
    return (extreme + 1) / (permutations + 1)
