"""Measuring first stages and rerankers on a test collection: quality and latency per query.

Systems: the store's three first stages (BM25, the bi-encoder, and both fused: see
``ChromaStore.retrieve``) and each reranker over the top ``depth`` candidates of one of
them (hybrid by default). Retrieval is chunk-level in Chroma; for document-level
judgements a document ranks at the position of its best chunk, and a reranker scores
that chunk. Rankings beyond the rerank depth keep the first stage's order, so
Recall@100 of a reranker at depth 20 is still measured over 100 documents.
"""

from __future__ import annotations

import functools
import json
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag_rerank.data import Dataset, natural_key
from rag_rerank.document import Document, ids_of
from rag_rerank.evaluation.metrics import score_run
from rag_rerank.rerank.base import Reranker, check_returned
from rag_rerank.retrieval.lexical import tokenize
from rag_rerank.retrieval.store import ChromaStore, Fusion, Mode

DEPTH_STEPS = (5, 10, 20, 30, 50, 100, 200)


@dataclass
class SystemResult:
    """One system's numbers: metrics averaged over queries, and per-query latency in ms."""

    name: str
    metrics: dict[str, float]
    latencies_ms: list[float]
    depth: int | None = None
    run: dict[str, list[str]] = field(default_factory=dict, repr=False)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.latencies_ms) if self.latencies_ms else 0.0

    @property
    def p95_ms(self) -> float:
        return _percentile(self.latencies_ms, 95)

    def row(self) -> dict[str, object]:
        return {
            "system": self.name,
            **{name: round(value, 4) for name, value in self.metrics.items()},
            "median ms/query": round(self.median_ms, 1),
            "p95 ms/query": round(self.p95_ms, 1),
            "rerank depth": self.depth if self.depth is not None else "-",
        }


@dataclass
class DepthPoint:
    """A reranker's quality when it reorders only the top ``depth`` candidates.

    ``median_ms`` is first-stage time plus rerank time scaled by depth (scoring cost is
    linear in the number of pairs), from the run at full depth.
    """

    system: str
    depth: int
    metrics: dict[str, float]
    median_ms: float


@dataclass
class EvalReport:
    dataset: str
    queries: int
    results: list[SystemResult]
    depth_curve: list[DepthPoint] = field(default_factory=list)

    def rows(self) -> list[dict[str, object]]:
        return [result.row() for result in self.results]

    def to_markdown(self) -> str:
        return markdown_table(self.rows())

    def write(self, folder: str | Path) -> list[Path]:
        """Write ``results.json``, ``results.csv``, ``results.md`` and, with matplotlib, ``plots.png``."""
        import csv

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        payload = {
            "dataset": self.dataset,
            "queries": self.queries,
            "results": self.rows(),
            "depth_curve": [point.__dict__ for point in self.depth_curve],
        }
        written = [folder / "results.json", folder / "results.csv", folder / "results.md"]
        written[0].write_text(json.dumps(payload, indent=2))
        with written[1].open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(self.rows()[0]))
            writer.writeheader()
            writer.writerows(self.rows())
        written[2].write_text(f"{self.dataset}, {self.queries} queries\n\n{self.to_markdown()}\n")
        try:
            written.append(self.plot(folder / "plots.png"))
        except ImportError:
            pass
        return written

    def plot(self, path: str | Path, metric: str = "nDCG@10") -> Path:
        """Two panels: metric vs rerank depth, and metric vs median latency per query."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (by_depth, by_latency) = plt.subplots(1, 2, figsize=(11, 4.2))
        for system in dict.fromkeys(point.system for point in self.depth_curve):
            points = [p for p in self.depth_curve if p.system == system]
            by_depth.plot([p.depth for p in points], [p.metrics[metric] for p in points], marker="o", label=system)
            by_latency.plot(
                [p.median_ms for p in points], [p.metrics[metric] for p in points], marker="o", label=system
            )
        for result in self.results:
            if result.depth is None:
                by_depth.axhline(result.metrics[metric], linestyle="--", linewidth=1, color="gray")
                by_depth.annotate(
                    result.name, (0.01, result.metrics[metric]), xycoords=("axes fraction", "data"), fontsize=8
                )
                by_latency.scatter([result.median_ms], [result.metrics[metric]], marker="s", label=result.name)
        by_depth.set(xlabel="rerank depth (candidates reordered)", ylabel=metric, title=f"{metric} vs rerank depth")
        by_latency.set(xlabel="median latency per query (ms)", ylabel=metric, title="quality vs latency", xscale="log")
        if self.depth_curve:
            by_depth.legend(fontsize=8)
        by_latency.legend(fontsize=8)
        fig.suptitle(f"{self.dataset}: {self.queries} queries")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return Path(path)


class BM25:
    """Okapi BM25 over whole documents held in memory (bm25s, the store's tokenisation), for
    candidates without a store; ``ChromaStore.retrieve(mode="lexical")`` is the store's own."""

    def __init__(self, corpus: Sequence[Document]):
        import bm25s

        self._docs = list(corpus)
        self._index = bm25s.BM25()
        self._index.index([tokens or [""] for tokens in tokenize([doc.text for doc in corpus])], show_progress=False)

    def search(self, query: str, k: int) -> list[Document]:
        tokens = tokenize([query])[0]
        if not tokens:
            return []
        k = min(k, len(self._docs))
        indices, scores = self._index.retrieve([tokens], k=k, show_progress=False, n_threads=0)
        return [self._docs[i].with_score(s, "bm25") for i, s in zip(indices[0], scores[0]) if s > 0]


def first_stage_name(store: ChromaStore, mode: Mode, fusion_method: Fusion = "weighted") -> str:
    if mode == "dense":
        return f"dense ({store.bi_encoder.model_name.split('/')[-1]})"
    if mode == "hybrid":
        return f"hybrid ({'RRF' if fusion_method == 'rrf' else 'weighted'})"
    return "BM25 (bm25s)"


def evaluate(
    dataset: Dataset,
    store: ChromaStore,
    rerankers: Mapping[str, Reranker] | None = None,
    *,
    depth: int = 100,
    first_stages: Sequence[Mode] = ("lexical", "dense", "hybrid"),
    rerank_over: Mode = "hybrid",
    fusion_method: Fusion = "weighted",
    dense_weight: float = 0.5,
    show_progress: bool = True,
) -> EvalReport:
    """Run every system over every query of ``dataset`` and score it against its qrels.

    ``first_stages`` are ``ChromaStore.retrieve`` modes; each reranker reorders the top
    ``depth`` documents of ``rerank_over``. The store must hold ``dataset.corpus``
    (``store.ingest(dataset.corpus)``).
    """

    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    if store.count() == 0:
        raise ValueError(f"the store's collection {store.collection_name!r} is empty: ingest {dataset.name} first")
    queries = sorted(dataset.queries.items(), key=lambda item: natural_key(item[0]))
    qrels = {q: dataset.qrels.get(q, {}) for q, _ in queries}
    list_k = max(depth, 100)
    results: list[SystemResult] = []
    found: dict[str, tuple[SystemResult, dict[str, list[Document]]]] = {}
    for mode in dict.fromkeys([*first_stages, *([rerank_over] if rerankers else [])]):
        search = functools.partial(
            store.retrieve, k=list_k, mode=mode, fusion_method=fusion_method, dense_weight=dense_weight
        )
        found[mode] = _run_first_stage(
            first_stage_name(store, mode, fusion_method), queries, search, qrels, show_progress
        )
        if mode in first_stages:
            results.append(found[mode][0])

    curve: list[DepthPoint] = []
    for name, reranker in (rerankers or {}).items():
        base, first_stage = found[rerank_over]
        runs = base.run
        first_ms = dict(zip(runs, base.latencies_ms))
        scores: dict[str, dict[str, float]] = {}
        rerank_ms: dict[str, float] = {}
        for query_id, (ranked, rerank_ms[query_id]) in _rerank_all(
            name, reranker, queries, first_stage, depth, show_progress
        ):
            scores[query_id] = {doc_id: float(doc.score or 0.0) for doc_id, doc in zip(ids_of(ranked), ranked)}
        for d in sorted({s for s in DEPTH_STEPS if s < depth} | {depth}):
            run = {q: _rerank_prefix(runs[q], scores[q], d) for q, _ in queries}
            ms = [
                first_ms[q] + rerank_ms[q] * min(d, len(runs[q])) / max(1, min(depth, len(runs[q]))) for q, _ in queries
            ]
            curve.append(DepthPoint(name, d, score_run(run, qrels), statistics.median(ms)))
            if d == depth:
                results.append(
                    SystemResult(name, curve[-1].metrics, [first_ms[q] + rerank_ms[q] for q, _ in queries], depth, run)
                )
    return EvalReport(dataset.name, len(queries), results, curve)


def _rerank_all(
    name: str,
    reranker: Reranker,
    queries: list[tuple[str, str]],
    first_stage: Mapping[str, list[Document]],
    depth: int,
    show_progress: bool,
) -> Iterator[tuple[str, tuple[list[Document], float]]]:
    """Each query's top ``depth`` reranked, with its time in ms: one query at a time, or all at once
    where the reranker offers ``rerank_many`` (``rag_rerank.scale.RayReranker``: a pool of Ray actors)."""
    from tqdm.auto import tqdm

    candidates = {query_id: first_stage[query_id][:depth] for query_id, _ in queries}
    rerank_many = getattr(reranker, "rerank_many", None)
    if rerank_many is not None:
        done = rerank_many([(query, candidates[query_id]) for query_id, query in queries])
        for (query_id, query), (ranked, ms) in zip(queries, done):
            check_returned(candidates[query_id], ranked, f"reranker {name!r}, query {query[:60]!r}")
            yield query_id, (ranked, ms)
        return
    for query_id, query in tqdm(queries, desc=name, disable=not show_progress):
        ranked, ms, _ = timed_rerank(name, reranker, query, candidates[query_id])
        yield query_id, (ranked, ms)


def _run_first_stage(
    name: str,
    queries: list[tuple[str, str]],
    search: Callable[[str], list[Document]],
    qrels: Mapping[str, Mapping[str, int]],
    show_progress: bool,
) -> tuple[SystemResult, dict[str, list[Document]]]:
    """Time ``search`` on every query; the result, and each query's documents for reranking."""
    from tqdm.auto import tqdm

    found, latencies = {}, []
    for query_id, query in tqdm(queries, desc=name, disable=not show_progress):
        started = time.perf_counter()
        found[query_id] = search(query)
        latencies.append((time.perf_counter() - started) * 1000)
    run = {query_id: ids_of(docs) for query_id, docs in found.items()}
    return SystemResult(name, score_run(run, qrels), latencies, run=run), found


def timed_rerank(
    name: str, reranker: Reranker, query: str, candidates: list[Document]
) -> tuple[list[Document], float, Any]:
    """Rerank, timed in ms, checking that exactly the candidates came back.

    The third value is the LLM rerankers' report (tokens, calls, fallbacks), else None.
    """
    started = time.perf_counter()
    if hasattr(reranker, "rerank_with_report"):
        report = reranker.rerank_with_report(query, candidates)
        ranked = report.documents
    else:
        report, ranked = None, reranker.rerank(query, candidates)
    ms = (time.perf_counter() - started) * 1000
    check_returned(candidates, ranked, f"reranker {name!r}, query {query[:60]!r}")
    return ranked, ms, report


def _rerank_prefix(ranking: list[str], scores: Mapping[str, float], depth: int) -> list[str]:
    """Reorder the first ``depth`` ids by score (ties keep first-stage order); keep the rest."""
    head = sorted(range(min(depth, len(ranking))), key=lambda i: (-scores[ranking[i]], i))
    return [ranking[i] for i in head] + ranking[depth:]


def _percentile(values: Sequence[float], pct: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low, high = int(rank), min(int(rank) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def markdown_table(rows: Sequence[Mapping[str, object]]) -> str:
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(row[h]) for h in header) + " |" for row in rows]
    return "\n".join(lines)


def summary_markdown(reports: Sequence[EvalReport], metrics: Sequence[str] = ("nDCG@10", "Recall@100")) -> str:
    """One row per system, one column per (collection, metric), and the mean over collections.

    A system missing from a collection shows "-" there and gets no mean.
    """
    systems = list(dict.fromkeys(result.name for report in reports for result in report.results))
    by_name = [{result.name: result for result in report.results} for report in reports]
    rows = []
    for system in systems:
        row: dict[str, object] = {"system": system}
        for metric in metrics:
            values = [found[system].metrics[metric] if system in found else None for found in by_name]
            for report, value in zip(reports, values):
                row[f"{report.dataset} {metric}"] = "-" if value is None else f"{value:.3f}"
            row[f"mean {metric}"] = "-" if None in values else f"{statistics.fmean(values):.3f}"  # type: ignore[arg-type]
        rows.append(row)
    return markdown_table(rows)
