"""Chunks that the bi-encoder reads whole vs 256-tiktoken-token chunks it truncates.

For each collection: the corpus ingested both ways (``ChunkSpec(fit_bi_encoder=True)``, the
default, in the collection ``rag-rerank eval`` uses, and ``False``, the old behaviour, in
``<name>-tiktoken256``; each ingested only if empty), then the dense and hybrid first stages
scored on the test queries. Prints one table: chunks, share of chunks the bi-encoder would truncate, nDCG@10 and
Recall@100 both ways.

    python benchmarks/bench_chunk_fit.py [--data ../shared/data/scifact ...] [--chroma-path .chroma]
"""

from __future__ import annotations

import argparse

import bench_common

from rag_rerank import BiEncoder, ChromaStore, ChunkSpec
from rag_rerank.data import load_collection
from rag_rerank.evaluation.harness import evaluate, markdown_table

SHARED = bench_common.ROOT.parent / "shared" / "data"
COLLECTIONS = ["scifact", "cranfield", "medline", "npl", "cacm", "adi"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", action="append", default=None, help="collection folders (default: all six)")
    parser.add_argument("--chroma-path", default=".chroma", help="the embedded Chroma folder (default: eval's)")
    args = parser.parse_args()
    folders = args.data or [str(SHARED / name) for name in COLLECTIONS]
    bi_encoder = BiEncoder()
    rows = []
    for folder in folders:
        data = load_collection(folder, "test")
        for fit in (False, True):
            name = data.name if fit else f"{data.name}-tiktoken256"
            store = ChromaStore(
                name, path=args.chroma_path, bi_encoder=bi_encoder, chunking=ChunkSpec(fit_bi_encoder=fit)
            )
            if store.count() == 0:
                store.ingest(data.corpus, show_progress=True)
            _, chunks = store.all_chunks()
            truncated = sum(not bi_encoder.fits(chunk) for chunk in chunks) / len(chunks)
            report = evaluate(data, store, first_stages=("dense", "hybrid"), show_progress=False)
            dense, hybrid = (result.metrics for result in report.results)
            rows.append(
                {
                    "collection": data.name,
                    "chunks": "fit the bi-encoder" if fit else "256 tiktoken tokens",
                    "count": len(chunks),
                    "truncated by MiniLM": f"{truncated:.1%}",
                    "dense nDCG@10": f"{dense['nDCG@10']:.4f}",
                    "dense R@100": f"{dense['Recall@100']:.4f}",
                    "hybrid nDCG@10": f"{hybrid['nDCG@10']:.4f}",
                    "hybrid R@100": f"{hybrid['Recall@100']:.4f}",
                }
            )
            print(markdown_table(rows[-1:]), flush=True)
    print()
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
