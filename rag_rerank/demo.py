"""The main job: Cranfield in an embedded Chroma, first stage and reranked results side by side."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rag_rerank.data import load_cranfield
from rag_rerank.document import Document
from rag_rerank.models import ModelNotFoundError

WIDTH = 58


def run_demo(args: argparse.Namespace) -> int:
    from rag_rerank.cli import _make_store
    from rag_rerank.reranker import CrossEncoderReranker

    data = Path(args.data)
    dataset = load_cranfield(data)
    store = _make_store(args)
    print(f"bi-encoder:    {args.bi_encoder}")
    print(f"chroma:        {args.chroma_host or Path(args.chroma_path).resolve()} (collection {args.collection!r})")
    if store.count() == 0 or args.reingest:
        started = time.perf_counter()
        report = store.ingest(dataset.corpus, show_progress=True)
        print(
            f"ingested {report.documents} Cranfield abstracts as {report.chunks} chunks in "
            f"{time.perf_counter() - started:.0f}s ({len(report.empty)} empty: {', '.join(report.empty)})"
        )
    else:
        print(f"collection holds {store.count()} chunks already (use --reingest to rebuild)")

    reranker = None
    try:
        reranker = CrossEncoderReranker(args.cross_encoder, device=args.device)
        print(f"cross-encoder: {args.cross_encoder} (reranking the top {args.fetch_k})")
    except ModelNotFoundError as error:
        print(f"\ncross-encoder: NOT LOADED - {error}")
        print(
            "Showing the first stage only: an untrained model's order is not a reranking.\n"
            "To rerank offline, train one on Cranfield with `make train` and run\n"
            "`make demo CROSS_ENCODER=models/cranfield-minilm-ce`, or point --cross-encoder at any local model."
        )

    print(
        "\nlegend: [gain] from Cranfield's judgements (4 = complete answer .. 1 = minimal interest, - = not judged relevant)"
    )
    for query_id in args.queries.split(","):
        query_id = query_id.strip()
        if query_id not in dataset.queries:
            raise ValueError(f"Cranfield has no query {query_id!r} (queries are numbered 1..{len(dataset.queries)})")
        query, gains = dataset.queries[query_id], dataset.qrels.get(query_id, {})
        first = store.query(query, k=max(args.k, args.fetch_k))
        print(f"\nquery {query_id}: {query}")
        left = _column(first[: args.k], gains)
        if reranker is None:
            print(f"  {'bi-encoder (cosine)':<{WIDTH}}")
            for line in left:
                print(f"  {line}")
            continue
        started = time.perf_counter()
        reranked = reranker.rerank(query, first, top_n=args.k)
        elapsed = time.perf_counter() - started
        right = _column(reranked, gains)
        print(f"  {'bi-encoder (cosine)':<{WIDTH}} | cross-encoder ({len(first)} pairs in {elapsed:.2f}s)")
        for a, b in zip(left, right):
            print(f"  {a:<{WIDTH}} | {b}")
    return 0


def _column(hits: list[Document], gains: dict[str, int]) -> list[str]:
    lines = []
    for rank, hit in enumerate(hits, start=1):
        source = hit.metadata.get("source_id", hit.id)
        gain = gains.get(source, 0)
        title = " ".join(str(hit.metadata.get("title") or hit.text).split())
        text = f"{rank}. [{gain or '-'}] {hit.score:6.3f} #{source:<5} {title}"
        lines.append(text if len(text) <= WIDTH else text[: WIDTH - 1] + "…")
    return lines
