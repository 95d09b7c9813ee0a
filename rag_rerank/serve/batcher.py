"""One worker feeds the model, so concurrent requests share batches; the queue in front of it is
bounded, and a full queue is an error the caller turns into 503, never unbounded buffering."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from rag_rerank.serve.metrics import Metrics


class Overloaded(Exception):
    """The queue in front of the model is full."""


class Batcher:
    """One worker feeds the model: it takes every waiting request up to ``max_pairs`` pairs
    and scores them in one pass, so concurrent small requests share batches."""

    def __init__(
        self,
        score_pairs: Callable[[list[tuple[str, str]]], list[float]],
        max_pairs: int,
        max_queue: int,
        metrics: Metrics,
    ):
        self._score_pairs = score_pairs
        self._max_pairs = max_pairs
        self._queue: asyncio.Queue = asyncio.Queue(maxsize=max_queue)
        self._metrics = metrics
        self._task: asyncio.Task | None = None
        metrics.queue_depth = self._queue.qsize

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def score(self, pairs: list[tuple[str, str]]) -> list[float]:
        future = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait((pairs, future))
        except asyncio.QueueFull:
            self._metrics.rejected += 1
            raise Overloaded from None
        return await future

    async def _run(self) -> None:
        while True:
            jobs = [await self._queue.get()]
            size = len(jobs[0][0])
            while size < self._max_pairs and not self._queue.empty():
                job = self._queue.get_nowait()
                jobs.append(job)
                size += len(job[0])
            jobs = [job for job in jobs if not job[1].done()]  # timed-out requests are skipped
            pairs = [pair for job_pairs, _ in jobs for pair in job_pairs]
            try:
                scores = await asyncio.to_thread(self._score_pairs, pairs) if pairs else []
            except Exception as error:  # noqa: BLE001 - a model failure fails the requests, not the worker
                for _, future in jobs:
                    if not future.done():
                        future.set_exception(error)
                continue
            self._metrics.pairs += len(pairs)
            self._metrics.batches += 1
            for (_, future), job_scores in zip(jobs, split_by_sizes(scores, [len(job[0]) for job in jobs])):
                if not future.done():
                    future.set_result(job_scores)


def split_by_sizes(flat: Sequence[float], sizes: Sequence[int]) -> list[list[float]]:
    """One batch's scores cut back into its requests' (``sizes``: each request's pair count, in order)."""
    out, start = [], 0
    for size in sizes:
        out.append(list(flat[start : start + size]))
        start += size
    return out
