"""Counters and sums in Prometheus' text format, without a client library.

Requests are labelled by route template (``/v1/rerank``), never by the raw path, so a scanner
probing random URLs adds one ``unmatched`` series instead of one per URL.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

UNMATCHED = "unmatched"


class Metrics:
    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.latency_sum: dict[str, float] = defaultdict(float)
        self.latency_count: dict[str, int] = defaultdict(int)
        self.server_errors = 0
        self.pairs = 0
        self.batches = 0
        self.rejected = 0
        self.queue_depth: Callable[[], int] = lambda: 0

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.requests[(route, status)] += 1
        self.latency_sum[route] += seconds
        self.latency_count[route] += 1
        if status >= 500:
            self.server_errors += 1

    def render(self) -> str:
        lines = [
            "# HELP rag_rerank_requests_total HTTP requests by route and status.",
            "# TYPE rag_rerank_requests_total counter",
        ]
        lines += [
            f'rag_rerank_requests_total{{path="{p}",status="{s}"}} {n}' for (p, s), n in sorted(self.requests.items())
        ]
        lines += ["# HELP rag_rerank_request_seconds Request latency.", "# TYPE rag_rerank_request_seconds summary"]
        for path in sorted(self.latency_count):
            lines.append(f'rag_rerank_request_seconds_sum{{path="{path}"}} {self.latency_sum[path]:.6f}')
            lines.append(f'rag_rerank_request_seconds_count{{path="{path}"}} {self.latency_count[path]}')
        lines += [
            "# HELP rag_rerank_server_errors_total Responses with a 5xx status.",
            "# TYPE rag_rerank_server_errors_total counter",
            f"rag_rerank_server_errors_total {self.server_errors}",
            "# HELP rag_rerank_pairs_scored_total (query, passage) pairs scored by the model.",
            "# TYPE rag_rerank_pairs_scored_total counter",
            f"rag_rerank_pairs_scored_total {self.pairs}",
            "# HELP rag_rerank_batches_total Model passes (each may serve several requests).",
            "# TYPE rag_rerank_batches_total counter",
            f"rag_rerank_batches_total {self.batches}",
            "# HELP rag_rerank_rejected_total Requests refused with 503 because the queue was full.",
            "# TYPE rag_rerank_rejected_total counter",
            f"rag_rerank_rejected_total {self.rejected}",
            "# HELP rag_rerank_queue_depth Requests waiting for the model.",
            "# TYPE rag_rerank_queue_depth gauge",
            f"rag_rerank_queue_depth {self.queue_depth()}",
        ]
        return "\n".join(lines) + "\n"
