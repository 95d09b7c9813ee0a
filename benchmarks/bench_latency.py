"""Query latency on the largest collection ../shared/data makes: all six corpora in one Chroma.

    python benchmarks/bench_latency.py [--queries 60] [--depth 30]

SciFact, NPL, CACM, Cranfield, MEDLINE and ADI (about 22,000 documents) are ingested into one fresh
embedded Chroma with the default bi-encoder (``backend="auto"``; ids prefixed by collection, so every
collection's documents are distractors for the others), then up to ``--queries`` test queries of each
collection run through each first stage with the bi-encoder in torch float32 and in auto's choice
(same collection, so only the query's embedding differs), and through the whole pipeline (hybrid
top ``depth`` reranked by the default cross-encoder, ``backend="auto"``). One warm-up query per row.
Prints ms per query (p50, p95) and nDCG@10 over the merged queries; name the CPU beside any figure.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import bench_common

from rag_rerank import BiEncoder, ChromaStore, CrossEncoderReranker, Document, load_collection
from rag_rerank.evaluation.metrics import ndcg

SHARED = bench_common.ROOT.parent / "shared" / "data"
COLLECTIONS = ("scifact", "npl", "cacm", "cranfield", "medline", "adi")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=60, help="test queries per collection (default 60)")
    parser.add_argument("--depth", type=int, default=30, help="candidates the cross-encoder reranks (default 30)")
    args = parser.parse_args()

    corpus: list[Document] = []
    queries: list[tuple[str, dict[str, int]]] = []  # (query, gains by prefixed doc id)
    for name in COLLECTIONS:
        data = load_collection(SHARED / name, "test")
        corpus += [
            Document(doc.text, {**doc.metadata, "collection": name}, id=f"{name}/{doc.id}") for doc in data.corpus
        ]
        for query_id in sorted(data.queries)[: args.queries]:
            gains = {f"{name}/{doc}": gain for doc, gain in data.qrels.get(query_id, {}).items()}
            queries.append((data.queries[query_id], gains))

    auto = BiEncoder()
    folder = tempfile.mkdtemp()
    store = ChromaStore("all-collections", path=folder, bi_encoder=auto)
    started = time.perf_counter()
    report = store.ingest(corpus, show_progress=True)
    seconds = time.perf_counter() - started
    print(f"CPU: {bench_common.cpu_description()}")
    print(
        f"ingested {len(corpus):,} documents ({report.chunks:,} chunks) in {seconds:.0f} s, "
        f"{len(corpus) / seconds:.1f} docs/s, bi-encoder backend={auto.backend} dtype={auto.dtype}"
    )
    print(f"{len(queries)} test queries ({args.queries} or fewer per collection of {', '.join(COLLECTIONS)})\n")

    torch_store = ChromaStore("all-collections", path=folder, bi_encoder=BiEncoder(backend="torch"))
    reranker = CrossEncoderReranker()
    rows = []
    for label, on, mode, rerank in (
        ("lexical (BM25)", store, "lexical", False),
        ("dense, bi-encoder torch float32", torch_store, "dense", False),
        (f"dense, bi-encoder auto ({auto.backend} {auto.dtype})", store, "dense", False),
        ("hybrid, bi-encoder torch float32", torch_store, "hybrid", False),
        (f"hybrid, bi-encoder auto ({auto.backend} {auto.dtype})", store, "hybrid", False),
        (f"hybrid + rerank top {args.depth} ({reranker.backend} {reranker.dtype}), all auto", store, "hybrid", True),
    ):
        on.retrieve(queries[0][0], 10, mode=mode)  # warm-up (BM25's index is built here)
        times, scores = [], []
        for query, gains in queries:
            began = time.perf_counter()
            docs = on.retrieve(query, args.depth if rerank else 10, mode=mode)
            if rerank:
                docs = reranker.rerank(query, docs)
            times.append(1000 * (time.perf_counter() - began))
            scores.append(ndcg([doc.id for doc in docs], gains, 10))
        rows.append(
            {
                "first stage": label,
                "ms/query p50": f"{statistics.median(times):.1f}",
                "p95": f"{bench_common.percentile(times, 0.95):.1f}",
                "nDCG@10": f"{statistics.mean(scores):.4f}",
            }
        )
    bench_common.print_table(rows)


if __name__ == "__main__":
    main()
