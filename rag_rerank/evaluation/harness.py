"""Measuring first stages and rerankers on a test collection: quality and latency per query.

Systems: the store's three first stages (BM25, the bi-encoder, and both fused: see
``ChromaStore.retrieve``) and each reranker over the top ``depth`` candidates of one of
them (hybrid by default). Retrieval is chunk-level in Chroma; for document-level
judgements a document ranks at the position of its best chunk, and a reranker scores
that chunk. Rankings beyond the rerank depth keep the first stage's order, so
Recall@100 of a reranker at depth 20 is still measured over 100 documents.

Every system is compared with the first stage it reranks (and rerankers with each other) on the
same queries: the mean difference in nDCG@10, its 95% interval and a p-value
(``significance``). Given what a trained model learned from (``memorisation.TrainingData``), the
report adds the test queries whose relevant documents it never saw, and the document-prior baseline.
"""

from __future__ import annotations

import functools
import json
import logging
import statistics
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag_rerank.data import Dataset, natural_key
from rag_rerank.document import Document, ids_of
from rag_rerank.evaluation.memorisation import DocumentPrior, TrainingData, overlap, pick_bonus
from rag_rerank.evaluation.metrics import mean_scores, score_queries
from rag_rerank.evaluation.significance import SEED, Difference, compare_paired
from rag_rerank.rerank.base import Reranker, check_returned
from rag_rerank.retrieval.lexical import tokenize
from rag_rerank.retrieval.store import ChromaStore, Fusion, Mode

DEPTH_STEPS = (5, 10, 20, 30, 50, 100, 200)
COMPARED = "nDCG@10"  # the metric every difference is reported in
UNSEEN = "queries whose relevant documents were never relevant in training"

log = logging.getLogger(__name__)


@dataclass
class SystemResult:
    """One system's numbers: metrics averaged over queries, each query's metrics, its latencies in
    ms, and its ranking of each query (``run``: document ids, best first)."""

    name: str
    metrics: dict[str, float]
    latencies_ms: list[float]
    depth: int | None = None
    run: dict[str, list[str]] = field(default_factory=dict, repr=False)
    per_query: dict[str, dict[str, float]] = field(default_factory=dict, repr=False)

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
    """What ``evaluate`` measured on one collection.

    ``baseline`` is the first stage the rerankers reorder; ``differences`` holds, for the whole
    test set and for each of ``subsets`` (named lists of query ids), every system against it and
    the rerankers against each other. ``notes`` says what a reader must know (a large overlap
    between training and test data)."""

    dataset: str
    queries: int
    results: list[SystemResult]
    depth_curve: list[DepthPoint] = field(default_factory=list)
    baseline: str | None = None
    subsets: dict[str, list[str]] = field(default_factory=dict)
    differences: dict[str, list[Difference]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seed: int = SEED

    def rows(self, subset: str | None = None) -> list[dict[str, object]]:
        """One row per system: its metrics (over ``subset``'s queries, if named) and its difference
        from the baseline in nDCG@10."""
        against = {d.system: d for d in self.differences.get(subset or ALL, []) if d.baseline == self.baseline}
        rows = []
        for result in self.results:
            row = result.row()
            if subset is not None:
                means = mean_scores(result.per_query, self.subsets[subset])
                row.update({name: round(value, 4) for name, value in means.items()})
            if self.baseline is not None:
                found = against.get(result.name)
                row[f"{COMPARED} vs {self.baseline}"] = found.label() if found else "-"
            rows.append(row)
        return rows

    def to_markdown(self) -> str:
        """The table on every query, the rerankers against each other, then each subset's table."""
        parts = [markdown_table(self.rows())]
        parts += [f"- {d.system} vs {d.baseline}: {d.label()}" for d in self._between_rerankers(ALL)]
        for name, queries in self.subsets.items():
            parts.append(f"On the {len(queries)} {name}:\n\n" + markdown_table(self.rows(name)))
            parts += [f"- {d.system} vs {d.baseline}: {d.label()}" for d in self._between_rerankers(name)]
        parts += [f"Note: {note}" for note in self.notes]
        parts.append(
            f"Differences: paired over queries; 95% interval by bootstrap, p by randomization test (seed {self.seed})."
        )
        return "\n\n".join(parts)

    def _labelled(self, system: str) -> str:
        """``system`` with its difference from the baseline at full depth, "n.s." where not significant."""
        found = next(
            (d for d in self.differences.get(ALL, []) if d.system == system and d.baseline == self.baseline), None
        )
        if found is None:
            return system
        return f"{system} ({found.mean:+.3f}{'' if found.significant else ', n.s.'})"

    def _between_rerankers(self, subset: str) -> list[Difference]:
        return [d for d in self.differences.get(subset, []) if d.baseline != self.baseline]

    def write(self, folder: str | Path) -> list[Path]:
        """Write ``results.json`` (tables, differences, subsets, notes, each query's metrics and the
        seed), ``runs.json`` (each system's ranking of each query), ``results.csv``, ``results.md``
        and, with matplotlib, ``plots.png``."""
        import csv

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        payload = {
            "dataset": self.dataset,
            "queries": self.queries,
            "baseline": self.baseline,
            "seed": self.seed,
            "results": self.rows(),
            "subsets": {name: {"queries": ids, "results": self.rows(name)} for name, ids in self.subsets.items()},
            "differences": {name: [d.as_dict() for d in found] for name, found in self.differences.items()},
            "notes": self.notes,
            "per_query": {result.name: result.per_query for result in self.results},
            "depth_curve": [point.__dict__ for point in self.depth_curve],
        }
        written = [folder / "results.json", folder / "runs.json", folder / "results.csv", folder / "results.md"]
        written[0].write_text(json.dumps(payload, indent=2))
        written[1].write_text(json.dumps({result.name: result.run for result in self.results}))
        with written[2].open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(self.rows()[0]))
            writer.writeheader()
            writer.writerows(self.rows())
        written[3].write_text(f"{self.dataset}, {self.queries} queries\n\n{self.to_markdown()}\n")
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
            label = self._labelled(system)
            by_depth.plot([p.depth for p in points], [p.metrics[metric] for p in points], marker="o", label=label)
            by_latency.plot([p.median_ms for p in points], [p.metrics[metric] for p in points], marker="o", label=label)
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


ALL = "all"  # the key of the whole test set in ``EvalReport.differences``


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
    training: TrainingData | None = None,
    seed: int = SEED,
    show_progress: bool = True,
) -> EvalReport:
    """Run every system over every query of ``dataset``, score it against its qrels, and compare.

    Args:
        dataset: The test collection (its queries and judgements).
        store: A store holding ``dataset.corpus`` (``store.ingest(dataset.corpus)``).
        rerankers: Name -> reranker; each reorders the top ``depth`` documents of ``rerank_over``.
        depth: How many first-stage candidates each reranker reorders.
        first_stages: The ``ChromaStore.retrieve`` modes measured on their own.
        rerank_over: The first stage the rerankers reorder: the baseline every system is compared with.
        fusion_method, dense_weight: Hybrid retrieval's fusion.
        training: What a trained reranker learned from in this collection: the report then adds the
            test queries none of whose relevant documents were relevant in training, warns when
            the overlap is large, and (where the training queries' texts are known) adds the
            document-prior baseline.
        seed: Seeds every random draw of the significance tests.
        show_progress: Progress bars.

    Returns:
        The report: tables, differences with intervals and p-values, per-query results, runs.

    Raises:
        ValueError: ``depth`` below 1, or an empty store.
    """
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    if store.count() == 0:
        raise ValueError(f"the store's collection {store.collection_name!r} is empty: ingest {dataset.name} first")
    queries = sorted(dataset.queries.items(), key=lambda item: natural_key(item[0]))
    qrels = {q: dataset.qrels.get(q, {}) for q, _ in queries}

    def search(mode: Mode) -> Callable[[str], list[Document]]:
        return functools.partial(
            store.retrieve, k=max(depth, 100), mode=mode, fusion_method=fusion_method, dense_weight=dense_weight
        )

    baseline = first_stage_name(store, rerank_over, fusion_method)
    rerankers = dict(rerankers or {})
    if training is not None and training.queries:
        rerankers = {**_document_prior(training, search(rerank_over), baseline), **rerankers}
    results, found = [], {}
    for mode in dict.fromkeys([*first_stages, *([rerank_over] if rerankers else [])]):
        found[mode] = _run_first_stage(
            first_stage_name(store, mode, fusion_method), queries, search(mode), qrels, show_progress
        )
        results.append(found[mode][0])
    curve: list[DepthPoint] = []
    for name, reranker in rerankers.items():
        result, points = _reranked(name, reranker, found[rerank_over], queries, qrels, depth, show_progress)
        results.append(result)
        curve += points
    report = EvalReport(dataset.name, len(queries), results, curve, seed=seed)
    report.baseline = baseline if rerank_over in found else None
    if training is not None:
        _add_unseen(report, qrels, training)
    report.differences = {name: _differences(report, ids) for name, ids in [(ALL, None), *report.subsets.items()]}
    return report


def _document_prior(
    training: TrainingData, first_stage: Callable[[str], list[Document]], baseline: str
) -> dict[str, Reranker]:
    """The document-prior baseline, its bonus picked on the training queries (logged)."""
    bonus, means = pick_bonus(training, first_stage)
    log.info("%s: document prior bonus %s (training nDCG@10 by bonus: %s)", training.collection, bonus, means)
    name = f"{baseline} + document prior (bonus {bonus:g}, picked on {len(training.queries)} training queries)"
    return {name: DocumentPrior(training.relevant, bonus)}


def _add_unseen(report: EvalReport, qrels: Mapping[str, Mapping[str, int]], training: TrainingData) -> None:
    """The test queries whose relevant documents were never relevant in training, as a subset; and
    a warning (logged, and in the report) where the test split shares many relevant documents."""
    found = overlap(qrels, training)
    if (warning := found.warning(report.dataset)) is not None:
        warnings.warn(warning, stacklevel=3)
        report.notes.append(warning)
    if found.unseen:
        report.subsets[UNSEEN] = found.unseen
    else:
        report.notes.append(
            f"every test query has a relevant document that was relevant in training ({training.collection})"
        )


def _differences(report: EvalReport, queries: list[str] | None) -> list[Difference]:
    """Every system against the baseline, then each reranker against each earlier one, in nDCG@10
    over ``queries`` (None: all)."""
    by_name = {result.name: result for result in report.results}

    def scores(name: str) -> dict[str, float]:
        per_query = by_name[name].per_query
        return {q: per_query[q][COMPARED] for q in (per_query if queries is None else queries)}

    pairs = [(result.name, report.baseline) for result in report.results if result.name != report.baseline]
    rerankers = [result.name for result in report.results if result.depth is not None]
    pairs += [(later, earlier) for i, earlier in enumerate(rerankers) for later in rerankers[i + 1 :]]
    return [
        compare_paired(system, base, COMPARED, scores(system), scores(base), seed=report.seed)
        for system, base in pairs
        if base is not None
    ]


def _reranked(
    name: str,
    reranker: Reranker,
    first_stage: tuple[SystemResult, dict[str, list[Document]]],
    queries: list[tuple[str, str]],
    qrels: Mapping[str, Mapping[str, int]],
    depth: int,
    show_progress: bool,
) -> tuple[SystemResult, list[DepthPoint]]:
    """A reranker over the first stage's top ``depth`` of every query: its result, and its quality
    at each smaller depth (``DEPTH_STEPS``)."""
    base, candidates = first_stage
    runs = base.run
    first_ms = dict(zip(runs, base.latencies_ms))
    scores: dict[str, dict[str, float]] = {}
    rerank_ms: dict[str, float] = {}
    for query_id, (ranked, rerank_ms[query_id]) in _rerank_all(
        name, reranker, queries, candidates, depth, show_progress
    ):
        scores[query_id] = {doc_id: float(doc.score or 0.0) for doc_id, doc in zip(ids_of(ranked), ranked)}
    points, result = [], None
    for d in sorted({s for s in DEPTH_STEPS if s < depth} | {depth}):
        run = {q: _rerank_prefix(runs[q], scores[q], d) for q, _ in queries}
        ms = [first_ms[q] + rerank_ms[q] * min(d, len(runs[q])) / max(1, min(depth, len(runs[q]))) for q, _ in queries]
        per_query = score_queries(run, qrels)
        points.append(DepthPoint(name, d, mean_scores(per_query), statistics.median(ms)))
        if d == depth:
            latencies = [first_ms[q] + rerank_ms[q] for q, _ in queries]
            result = SystemResult(name, points[-1].metrics, latencies, depth, run, per_query)
    assert result is not None  # depth is always among the depths
    return result, points


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
    per_query = score_queries(run, qrels)
    return SystemResult(name, mean_scores(per_query), latencies, run=run, per_query=per_query), found


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
