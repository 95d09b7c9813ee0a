"""Comparison mode: no rerank vs cross-encoder vs LLM rerankers on the same candidates.

Every system reorders the same first-stage candidates for the same queries; the report
gives, side by side, the orders, how much the systems agree (Kendall tau over the whole
candidate list, overlap of the top k), latency, LLM tokens and fallbacks, and with
judgements the evaluation metrics and, for every pair of systems, the paired difference in
nDCG@10 with its 95% interval and p-value (``significance``).
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from rag_rerank.document import Document, ids_of
from rag_rerank.evaluation.harness import markdown_table, timed_rerank
from rag_rerank.evaluation.metrics import mean_scores, score_queries
from rag_rerank.evaluation.significance import SEED, Difference, compare_paired
from rag_rerank.rerank.base import Reranker
from rag_rerank.retrieval.store import ChromaStore

NO_RERANK = "no rerank"


@dataclass
class SystemRun:
    name: str
    orders: dict[str, list[str]] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    llm_calls: int = 0
    fallbacks: list[str] = field(default_factory=list)


@dataclass
class Comparison:
    queries: dict[str, str]
    systems: list[SystemRun]
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    k: int = 10
    per_query: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # system -> query -> metric
    seed: int = SEED

    def differences(self, metric: str = "nDCG@10") -> list[Difference]:
        """Every later system against every earlier one (each against "no rerank" first), paired
        over the judged queries; empty without judgements."""
        names = [run.name for run in self.systems if run.name in self.per_query]
        return [
            compare_paired(
                later,
                earlier,
                metric,
                {q: v[metric] for q, v in self.per_query[later].items()},
                {q: v[metric] for q, v in self.per_query[earlier].items()},
                seed=self.seed,
            )
            for i, earlier in enumerate(names)
            for later in names[i + 1 :]
        ]

    def agreement(self) -> list[dict[str, object]]:
        """Mean Kendall tau and overlap@k for every pair of systems."""
        from scipy.stats import kendalltau

        rows = []
        for a, b in itertools.combinations(self.systems, 2):
            taus, overlaps = [], []
            for q in self.queries:
                position = {doc: i for i, doc in enumerate(b.orders[q])}
                if len(a.orders[q]) > 1:
                    taus.append(kendalltau(range(len(a.orders[q])), [position[d] for d in a.orders[q]]).statistic)
                overlaps.append(
                    len(set(a.orders[q][: self.k]) & set(b.orders[q][: self.k])) / max(1, min(self.k, len(a.orders[q])))
                )
            rows.append(
                {
                    "systems": f"{a.name} vs {b.name}",
                    "Kendall tau": round(statistics.mean(taus), 3) if taus else float("nan"),
                    f"overlap@{self.k}": round(statistics.mean(overlaps), 3),
                }
            )
        return rows

    def summary(self) -> list[dict[str, object]]:
        rows = []
        for run in self.systems:
            row: dict[str, object] = {"system": run.name}
            row.update({name: round(value, 4) for name, value in self.metrics.get(run.name, {}).items()})
            row["median ms/query"] = round(statistics.median(run.latencies_ms), 1)
            row["LLM calls"] = run.llm_calls
            row["prompt tokens"] = run.prompt_tokens
            row["completion tokens"] = run.completion_tokens
            row["fallbacks"] = len(run.fallbacks)
            rows.append(row)
        return rows

    def side_by_side(self, query_id: str, top: int = 10) -> list[dict[str, str]]:
        """Rank by rank, the doc id each system puts there."""
        return [
            {
                "rank": str(i + 1),
                **{
                    run.name: (run.orders[query_id][i] if i < len(run.orders[query_id]) else "") for run in self.systems
                },
            }
            for i in range(min(top, max(len(run.orders[query_id]) for run in self.systems)))
        ]

    def to_markdown(self) -> str:
        parts = [markdown_table(rows) for rows in (self.summary(), self.agreement()) if rows]
        differences = self.differences()
        if differences:
            parts.append("\n".join(f"- {d.system} vs {d.baseline}, {d.metric}: {d.label()}" for d in differences))
        return "\n\n".join(parts)


def first_stage_candidates(
    store: ChromaStore, queries: Mapping[str, str], depth: int = 20
) -> dict[str, list[Document]]:
    """Each query's top ``depth`` documents from the store's hybrid first stage (best chunk per document)."""
    return {q: store.retrieve(text, depth) for q, text in queries.items()}


def compare(
    queries: Mapping[str, str],
    candidates: Mapping[str, Sequence[Document]],
    rerankers: Mapping[str, Reranker],
    *,
    qrels: Mapping[str, Mapping[str, int]] | None = None,
    k: int = 10,
    show_progress: bool = True,
) -> Comparison:
    """Run each reranker on each query's candidates, side by side with no rerank.

    Args:
        queries: Query id -> text.
        candidates: Query id -> its first-stage documents, best first, each with a unique id.
        rerankers: Name -> any ``Reranker``; LLM rerankers with ``rerank_with_report`` also report
            tokens, calls and fallbacks.
        qrels: Judgements; with them, metrics and paired differences (``Comparison.differences``).
        k: The depth of the overlap measure.
        show_progress: Progress bars.

    Returns:
        The comparison: orders, agreement, latency, tokens, and with judgements the metrics.

    Raises:
        KeyError: a query without candidates.
        ValueError: candidates without unique ids.
    """
    from tqdm.auto import tqdm

    for q in queries:
        if q not in candidates:
            raise KeyError(f"no candidates for query {q!r}")
        ids = [doc.id for doc in candidates[q]]
        if None in ids or len(set(ids)) != len(ids):
            raise ValueError(f"candidates of query {q!r} need unique ids")
    runs = [SystemRun(NO_RERANK, {q: ids_of(candidates[q]) for q in queries}, [0.0] * len(queries))]
    for name, reranker in rerankers.items():
        run = SystemRun(name)
        for q, text in tqdm(list(queries.items()), desc=name, disable=not show_progress):
            ranked, ms, report = timed_rerank(name, reranker, text, list(candidates[q]))
            if report is not None:
                run.prompt_tokens += report.prompt_tokens
                run.completion_tokens += report.completion_tokens
                run.llm_calls += len(report.calls)
                run.fallbacks += [f"query {q}: {f}" for f in report.fallbacks]
            run.latencies_ms.append(ms)
            run.orders[q] = ids_of(ranked)
        runs.append(run)
    per_query = {}
    judged = {q: qrels[q] for q in queries if q in qrels} if qrels else {}
    if any(g > 0 for gains in judged.values() for g in gains.values()):
        per_query = {run.name: score_queries(run.orders, judged) for run in runs}
    metrics = {name: mean_scores(scores) for name, scores in per_query.items()}
    return Comparison(dict(queries), runs, metrics, k, per_query)
