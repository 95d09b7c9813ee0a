"""Cross-encoder reranking speed: each lever against CrossEncoder.predict, in one process.

    python benchmarks/bench_rerank_speed.py [--model PATH] [--queries 10] [--depth 100]
        [--max-length 512] [--configs sentence-transformers:32,torch:auto,torch:auto:bfloat16,onnx-int8:auto]

Candidates are BM25's top ``depth`` Cranfield abstracts for each query (real, mixed
lengths; 512 tokens keeps nearly all of each pair). A config is
``backend:batch_size[:dtype][:compile][:full]`` (``auto`` = the library's default batch; ``compile``
= ``compile=True``, its compile time printed apart; ``full`` = every token through the last layer,
without the [CLS]-only cut), or ``tune-allocator``, which applies
``rag_rerank.tune_allocator()`` to every row after it; the first is the baseline,
``CrossEncoder.predict`` with its default batch of 32. For each config it prints pairs/s,
ms per query (median, p95), the peak RSS growth while scoring one more query (untimed,
after the timed ones), agreement with the baseline scores (max |diff|, Kendall tau per
query) and nDCG@10 of the reranked lists, plus achieved FLOP/s as a share of this
machine's fp32 matmul peak, all measured in the same run, then what the score cache
saves on a repeated query. Without --model it uses the bundled MiniLM-L6 weights with a
fresh head: the same architecture and cost, but meaningless rankings (nDCG then only
shows agreement); pass a trained model for quality.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import threading
import time

import numpy as np
from bench_common import CRANFIELD, model_or_fresh_head, print_table


def matmul_peak_gflops(size: int = 2048, repeats: int = 10, trials: int = 5) -> tuple[float, str]:
    """This machine's practical fp32 peak: the best of ``trials`` timings of ``repeats`` square
    matmuls, by torch (MKL) and by numpy (OpenBLAS), and which library reached it. Both count:
    MKL stays ~20% below OpenBLAS on AMD CPUs, and a peak measured with the slower one would
    flatter every row's share."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    libraries = {"torch.mm": lambda: torch.mm(a, b), "numpy matmul": lambda: a.numpy() @ b.numpy()}
    peaks = {}
    for name, run in libraries.items():
        for _ in range(3):
            run()
        best = 0.0
        for _ in range(trials):
            started = time.perf_counter()
            for _ in range(repeats):
                run()
            best = max(best, 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9)
        peaks[name] = best
    library = max(peaks, key=peaks.get)
    return peaks[library], ", ".join(f"{name} {gflops:.0f}" for name, gflops in peaks.items())


def flops_per_pair(config, tokens: int) -> float:
    """Multiply-adds x2 of one BERT forward over ``tokens`` real tokens (embeddings excluded)."""
    h, ffn, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    per_layer = tokens * 2 * (4 * h * h + 2 * h * ffn) + 2 * 2 * tokens * tokens * h
    return layers * per_layer + 2 * h * h  # + pooler


class PeakRss:
    """Samples this process's RSS in a thread; ``growth`` is the peak minus the start, in MiB."""

    def __enter__(self):
        import psutil

        self._process = psutil.Process()
        self.start = self.peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> float:
        return (self.peak - self.start) / 2**20


@contextlib.contextmanager
def whole_last_layer():
    """Backends built inside run every token through the last layer, as before the [CLS]-only cut
    (``rag_rerank.inference.first_token``), with ONNX files cached apart: the A/B of that lever."""
    from rag_rerank.inference import first_token

    cut, cache = first_token.first_token_network, os.environ.get("RAG_RERANK_CACHE")
    first_token.first_token_network = lambda network: network
    os.environ["RAG_RERANK_CACHE"] = tempfile.mkdtemp(prefix="rag-rerank-whole-last-layer-")
    try:
        yield
    finally:
        first_token.first_token_network = cut
        if cache is None:
            del os.environ["RAG_RERANK_CACHE"]
        else:
            os.environ["RAG_RERANK_CACHE"] = cache


DEFAULT_CONFIGS = ",".join(  # noqa: FLY002 - one config a line, each with its reason
    [
        "sentence-transformers:32",  # the baseline: CrossEncoder.predict as shipped
        "sentence-transformers:8",  # lever: small batches alone
        "torch:32",  # lever: our own loop (tokenise once, inference_mode)
        "torch:auto:full",  # the default's loop with every token through the last layer
        "torch:auto",  # the combined default (exact); lever: the last layer for [CLS] only
        "onnx:auto:full",
        "onnx:auto",  # lever: ONNX Runtime fp32, fused graph
        "torch:auto:bfloat16",  # lever: bfloat16 (AVX-512 BF16) + small batches
        "onnx-int8:32",  # lever: int8 alone
        "onnx-int8:auto",  # int8 + small batches
        "torch-int8:auto",  # lever: int8 with per-token activation scales
        "tune-allocator",  # lever: glibc keeps freed pages (process-wide: every row below has it)
        "torch:auto",
        "torch:auto:bfloat16",
        "onnx-int8:auto",
        "torch-int8:auto",
        "torch-int8:auto:compile",  # lever: torch.compile fuses int8's quantise/rescale steps (the fast default)
    ]
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="cross-encoder folder (default: MiniLM-L6 with a fresh head)")
    parser.add_argument("--data", default=str(CRANFIELD))
    parser.add_argument("--queries", type=int, default=10, help="queries timed (each reranks --depth candidates)")
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--max-length", type=int, default=512, help="token limit per pair (the architecture's)")
    parser.add_argument("--configs", default=DEFAULT_CONFIGS, help="backend:batch_size,... (first = baseline)")
    args = parser.parse_args()

    import torch
    from scipy.stats import kendalltau

    from rag_rerank import CrossEncoderReranker, load_cranfield, load_cross_encoder, tune_allocator
    from rag_rerank.data import split_queries
    from rag_rerank.evaluation.harness import BM25
    from rag_rerank.evaluation.metrics import ndcg
    from rag_rerank.inference.cpu import matmul_speedup, slow_precision

    model = model_or_fresh_head(args.model)
    data = load_cranfield(args.data)
    _, test_ids = split_queries(data)
    query_ids = test_ids[: args.queries]
    bm25 = BM25(data.corpus)
    candidates = {q: bm25.search(data.queries[q], args.depth) for q in query_ids}
    print(
        f"machine: {os.cpu_count()} cores ({torch.backends.cpu.get_cpu_capability()}), torch {torch.__version__},"
        f" {torch.get_num_threads()} threads; matmul vs float32: int8 {matmul_speedup('int8'):.2f}x,"
        f" bfloat16 {matmul_speedup('bfloat16'):.2f}x"
    )
    peak, peaks = matmul_peak_gflops()
    print(f"fp32 matmul peak (2048x2048, best of {peaks} GFLOP/s): {peak:.0f} GFLOP/s")
    print(f"model: {model}\nqueries: {len(query_ids)} held-out Cranfield queries x {args.depth} BM25 candidates\n")

    flops = _useful_flops(
        load_cross_encoder(model, device="cpu", max_length=args.max_length), data, candidates, args.max_length
    )
    rows, skipped, baseline, tuned = [], [], None, False
    for config in args.configs.split(","):
        if config == "tune-allocator":
            tuned = tune_allocator()
            print(f"  allocator tuned: {tuned}", file=sys.stderr)
            continue
        backend, batch, *options = config.split(":")
        dtype = next((option for option in options if option not in {"compile", "full"}), "float32")
        compile, full = "compile" in options, "full" in options
        batch_size = None if batch == "auto" else int(batch)
        if reason := slow_precision(backend, dtype):
            skipped.append(f"{config}: {reason}")
            continue
        started = time.perf_counter()
        with whole_last_layer() if full else contextlib.nullcontext():
            reranker = CrossEncoderReranker(
                model,
                backend=backend,
                batch_size=batch_size,
                dtype=dtype,
                compile=compile,
                max_length=args.max_length,
                device="cpu",
            )
        if compile:
            print(f"  {config}: compiled in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        warm = candidates[query_ids[0]]
        reranker.score(data.queries[query_ids[0]], [d.text for d in warm[:16]])  # warm-up
        times, scores = [], {}
        for q in query_ids:
            passages = [d.text for d in candidates[q]]
            started = time.perf_counter()
            scores[q] = np.asarray(reranker.score(data.queries[q], passages))
            times.append(time.perf_counter() - started)
        with PeakRss() as rss:  # apart from the timing: the sampling thread takes the GIL every 5 ms
            reranker.score(data.queries[query_ids[-1]], [d.text for d in candidates[query_ids[-1]]])
        pairs = sum(len(candidates[q]) for q in query_ids)
        total = sum(times)
        if baseline is None:
            baseline = {"scores": scores, "pairs_per_s": pairs / total, "median": statistics.median(times)}
        taus = [kendalltau(baseline["scores"][q], scores[q]).statistic for q in query_ids]
        max_diff = max(float(np.abs(baseline["scores"][q] - scores[q]).max()) for q in query_ids)
        ndcg10 = statistics.mean(
            ndcg([candidates[q][i].id for i in np.argsort(-scores[q], kind="stable")], data.qrels.get(q, {}), 10)
            for q in query_ids
        )
        rows.append(
            {
                "backend": backend
                + ("" if dtype == "float32" else f" {dtype}")
                + (" compiled" if compile else "")
                + (" (whole last layer)" if full else "")
                + (" +allocator" if tuned else ""),
                "batch": f"{reranker.batch_size}" + (" (auto)" if batch_size is None else ""),
                "pairs/s": pairs / total,
                "x pairs/s": pairs / total / baseline["pairs_per_s"],
                "ms/query med": 1000 * statistics.median(times),
                "ms/query p95": 1000 * float(np.percentile(times, 95)),
                "x query": baseline["median"] / statistics.median(times),
                "peak RSS +MiB": rss.growth,
                "max |diff|": max_diff,
                "tau min": min(taus),
                "tau mean": statistics.mean(taus),
                "nDCG@10": ndcg10,
                "GFLOP/s": flops / total / 1e9,
                "% peak": 100 * flops / total / 1e9 / peak,
            }
        )
        print(f"  {config}: {pairs / total:.1f} pairs/s", file=sys.stderr)

    print_table(
        [{key: value if isinstance(value, str) else _fmt(key, value) for key, value in row.items()} for row in rows]
    )
    for line in skipped:
        print(f"skipped {line}")
    if rows:
        needed = 3 * float(rows[0]["GFLOP/s"])
        print(
            f"3x the baseline in float32 would need {needed:.0f} GFLOP/s of useful work: {100 * needed / peak:.0f}% of the peak"
        )
    print(
        f"\nscore cache: {_repeat_query_ms(model, args.max_length, data.queries[query_ids[0]], warm):.2f} ms"
        f" for a repeated {len(warm)}-candidate query with cache_size=10000 (vs ms/query above)"
    )
    print(
        "\n% peak counts the whole network's useful FLOPs (real tokens, no padding; the [CLS]-only last layer"
        " does ~14% less, so its rows read higher) against fp32 matmul peak;"
        " int8 runs on integer units (VNNI, or AVX2 in ONNX Runtime) whose peak is higher, so its share can exceed 100%."
    )
    return 0


def _useful_flops(cross_encoder, data, candidates: dict, max_length: int) -> float:
    """FLOPs of every timed pair from its real token count: the same for every config."""
    total = 0.0
    for q, docs in candidates.items():
        encoded = cross_encoder.tokenizer(
            [data.queries[q]] * len(docs), [d.text for d in docs], truncation=True, max_length=max_length
        )
        total += sum(flops_per_pair(cross_encoder.model.config, len(ids)) for ids in encoded["input_ids"])
    return total


def _repeat_query_ms(model: str, max_length: int, query: str, candidates: list) -> float:
    """A chatbot asking again: the second call is answered from the score cache."""
    from rag_rerank import CrossEncoderReranker

    reranker = CrossEncoderReranker(model, max_length=max_length, cache_size=10_000, device="cpu")
    reranker.rerank(query, candidates)
    started = time.perf_counter()
    reranker.rerank(query, candidates)
    return 1000 * (time.perf_counter() - started)


def _fmt(key: str, value: float) -> str:
    if key in {"max |diff|"}:
        return f"{value:.2e}"
    if key.startswith("tau") or key == "nDCG@10":
        return f"{value:.4f}"
    if key.startswith("x "):
        return f"{value:.2f}x"
    return f"{value:.1f}"


if __name__ == "__main__":
    sys.exit(main())
