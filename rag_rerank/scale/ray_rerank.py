"""Reranking many queries at once on Ray: a pool of actors, each holding its own reranker."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from rag_rerank.document import Document, as_documents, mark_truncated
from rag_rerank.rerank.base import Reranker
from rag_rerank.scale.batch import arrow_table, file_format, parse_row, rerank_row
from rag_rerank.scale.runtime import actor_threads, check_pool, start_ray


class _Scorer:
    """A Ray actor: builds the reranker once, then scores each batch of rows (``batch.rerank_row``).

    Rows travel as JSON text (column ``text``), parsed and written back here, so every value keeps its
    exact JSON type (Arrow's and pandas' JSON readers would turn an id "007" into 7); Parquet rows
    come as Arrow rows and go back the same way.
    """

    def __init__(self, make_reranker: Callable[[], Reranker], cpus: float, json_lines: bool):
        actor_threads(cpus)
        self.reranker = make_reranker()
        self.json_lines = json_lines

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        if not self.json_lines:
            return arrow_table([rerank_row(self.reranker, row, _where(row)) for row in batch.to_pylist()])
        lines = [line for line in batch.column("text").to_pylist() if line.strip()]
        rows = [parse_row(line, f"line {line[:60]!r}") for line in lines]
        done = [json.dumps(rerank_row(self.reranker, row, _where(row)), ensure_ascii=False) for row in rows]
        return pa.table({"text": pa.array(done, pa.string())})


def _where(row: dict[str, Any]) -> str:
    for key in ("query_id", "qid", "id", "_id"):
        if key in row:
            return f"row {key}={row[key]!r}"
    return f"row with query {str(row.get('query'))[:60]!r}"


class RayReranker:
    """Reranks many queries at once in ``actors`` Ray actors, each building its reranker with
    ``make_reranker`` (a picklable factory, e.g. ``functools.partial(CrossEncoderReranker, name)``).

    Each actor reserves ``cpus_per_actor`` CPUs (torch gets that many threads) and
    ``gpus_per_actor`` GPUs, and takes ``rows_per_task`` queries per task. Starts a local Ray
    unless one is running or ``address`` names a cluster. Results come back in input order.
    """

    def __init__(
        self,
        make_reranker: Callable[[], Reranker],
        *,
        actors: int = 2,
        cpus_per_actor: float = 1,
        gpus_per_actor: float = 0,
        rows_per_task: int = 8,
        address: str | None = None,
    ):
        check_pool(actors, cpus_per_actor)
        if rows_per_task < 1:
            raise ValueError(f"rows_per_task must be at least 1, got {rows_per_task}")
        self.make_reranker = make_reranker
        self.actors, self.cpus_per_actor, self.gpus_per_actor = actors, cpus_per_actor, gpus_per_actor
        self.rows_per_task = rows_per_task
        self.address = address

    def rerank_many(self, requests: Sequence[tuple[str, Sequence[Document]]]) -> list[tuple[list[Document], float]]:
        """Each (query, candidates) reranked: every candidate with its score, best first, and the
        milliseconds its actor took. Candidates in first-stage order, as for ``rerank``."""
        if not requests:
            return []
        ray = self._start()
        rows = [json.dumps({"query": query, "candidates": [doc.text for doc in docs]}) for query, docs in requests]
        scored = [
            row for rows in self._scored(ray.data.from_items([{"text": row} for row in rows]), True) for row in rows
        ]
        return [_ranked(docs, row) for (_, docs), row in zip(requests, scored)]

    def rerank(self, query: str, documents: Sequence[Document | str]) -> list[Document]:
        """One query (the ``Reranker`` protocol); ``rerank_many`` is the efficient call."""
        return self.rerank_many([(query, as_documents(documents))])[0][0]

    def rerank_rows_of(self, source: str | Path) -> Iterator[list[dict[str, Any]]]:
        """The rows of a .jsonl or .parquet file, read by Ray in parallel and scored by the actors,
        in the file's order (``batch.rerank_file`` writes them)."""
        ray = self._start()
        # Reading reserves no CPU: it is light next to scoring, and a pool of actors that fills the
        # cluster (2 one-CPU actors on 2 CPUs) would otherwise leave it none, and wait forever.
        if file_format(source) == "parquet":
            return self._scored(ray.data.read_parquet(str(source), num_cpus=0), False)
        return self._scored(ray.data.read_text(str(source), num_cpus=0), True)

    def _start(self) -> Any:
        ray = start_ray(self.address)
        ray.data.DataContext.get_current().execution_options.preserve_order = True
        return ray

    def _scored(self, rows: Any, json_lines: bool) -> Iterator[list[dict[str, Any]]]:
        import ray.data

        scored = rows.map_batches(
            _Scorer,
            fn_constructor_kwargs={
                "make_reranker": self.make_reranker,
                "cpus": self.cpus_per_actor,
                "json_lines": json_lines,
            },
            compute=ray.data.ActorPoolStrategy(size=self.actors),
            batch_size=self.rows_per_task,
            batch_format="pyarrow",
            num_cpus=self.cpus_per_actor,
            num_gpus=self.gpus_per_actor,
        )
        for batch in scored.iter_batches(batch_format="pyarrow", batch_size=None):
            rows = batch.to_pylist()
            yield [json.loads(row["text"]) for row in rows] if json_lines else rows


def _ranked(docs: Sequence[Document], row: dict[str, Any]) -> tuple[list[Document], float]:
    truncated = dict(zip(row["truncated"], row["truncated_by"]))
    scored = [
        (mark_truncated(doc, truncated[i]) if i in truncated else doc).with_score(score, row["score_kind"])
        for i, (doc, score) in enumerate(zip(docs, row["scores"]))
    ]
    order = sorted(range(len(scored)), key=lambda i: -row["scores"][i])  # ties keep first-stage order
    return [scored[i] for i in order], float(row["rerank_ms"])
