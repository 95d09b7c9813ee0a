"""The first stage's speed at equal quality: ingest documents/s, dense nDCG@10 and query latency
(p50/p95) of the bi-encoder in torch float32 and OpenVINO float32, bfloat16 and int8, in one run
(a precision this CPU has no fast kernels for is left out and said so).

    python benchmarks/bench_bi_encoder.py [adi medline cranfield ...]

Each collection is ingested whole into a fresh embedded Chroma per row, then its test queries run
through dense retrieval. Prints one line per row; name the CPU beside any figure you quote.
"""

import sys

import bench_common

from rag_rerank import BiEncoder, load_collection
from rag_rerank.evaluation.harness import evaluate
from rag_rerank.inference.cpu import slow_precision

SHARED = bench_common.ROOT.parent / "shared" / "data"
print(f"CPU: {bench_common.cpu_description()}")
for name in sys.argv[1:] or ["adi", "medline", "cranfield"]:
    data = load_collection(SHARED / name, "test")
    for backend, dtype in (
        ("torch", "float32"),
        ("openvino", "float32"),
        ("openvino", "bfloat16"),
        ("openvino", "int8"),
    ):
        if reason := slow_precision(backend, dtype):
            print(f"{name} {backend} {dtype}: left out: {reason}", flush=True)
            continue
        store, el = bench_common.ingested(
            BiEncoder(backend=backend, dtype=dtype), data.corpus, f"{name}-{backend}-{dtype}"
        )
        r = evaluate(data, store, first_stages=("dense",), show_progress=False).results[0]
        print(
            f"{name} {backend} {dtype}: {len(data.corpus) / el:.1f} docs/s, dense nDCG@10 {r.metrics['nDCG@10']:.4f}, query p50 {r.median_ms:.1f} ms p95 {r.p95_ms:.1f}",
            flush=True,
        )
