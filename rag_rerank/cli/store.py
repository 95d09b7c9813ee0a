"""``rag-rerank ingest`` and ``rag-rerank query``: fill a store, ask it."""

from __future__ import annotations

import argparse
import json
from typing import get_args

from rag_rerank.cli.options import Commands, make_store, one_line, ray_options
from rag_rerank.retrieval.store import Mode


def add_ingest(commands: Commands, store: argparse.ArgumentParser) -> None:
    """rag-rerank ingest PATHS..."""
    ingest = commands.add_parser(
        "ingest",
        parents=[store, ray_options("chunk, embed and write in parallel actors (needs --chroma-host)")],
        help="chunk, embed and store documents",
    )
    ingest.add_argument("paths", nargs="+", help=".txt/.md files, .jsonl files, folders, or the Cranfield folder")
    ingest.add_argument("--chunk-size", type=int, default=256, help="chunk size in tokens (default 256)")
    ingest.add_argument("--chunk-overlap", type=int, default=32, help="overlap in tokens (default 32)")
    ingest.add_argument("--encoding", default="cl100k_base", help="tiktoken encoding for chunking")


def add_query(commands: Commands, store: argparse.ArgumentParser, rerank: argparse.ArgumentParser) -> None:
    """rag-rerank query TEXT"""
    query = commands.add_parser("query", parents=[store, rerank], help="retrieve (and rerank) for one query")
    query.add_argument("text", help="the query")
    query.add_argument("-k", type=int, default=5, help="results to show (default 5)")
    query.add_argument("--no-rerank", action="store_true", help="first stage only")
    query.add_argument("--mode", choices=get_args(Mode), default="hybrid", help="first stage (default hybrid)")
    query.add_argument("--chunks", action="store_true", help="raw chunks instead of one result per document")
    query.add_argument("--json", action="store_true", help="print JSON lines instead of a table")


def cmd_ingest(args: argparse.Namespace) -> int:
    from rag_rerank import ChunkSpec, load_documents

    store = make_store(args, ChunkSpec(args.chunk_size, args.chunk_overlap, args.encoding))
    documents = load_documents(args.paths)
    if args.ray is not None:
        from rag_rerank.scale import ingest_on_ray

        report = ingest_on_ray(
            documents,
            store,
            actors=args.actors,
            cpus_per_actor=args.cpus_per_actor,
            gpus_per_actor=args.gpus_per_actor,
            address=args.ray or None,
        )
    else:
        report = store.ingest(documents, show_progress=True)
    print(
        f"ingested {report.documents} documents as {report.chunks} chunks into {args.collection!r} "
        f"({store.count()} chunks in total)"
    )
    if report.skipped:
        print(f"{len(report.skipped)} documents unchanged since the last ingest, skipped (not re-embedded)")
    if report.empty:
        print(f"{len(report.empty)} documents had no text and were not stored: {', '.join(report.empty[:20])}")
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    from rag_rerank import CrossEncoderReranker, two_stage_search

    store = make_store(args)
    reranker = None if args.no_rerank else CrossEncoderReranker(args.cross_encoder, device=args.device)
    hits = [
        doc
        for doc, _ in two_stage_search(
            store, args.text, k=args.k, reranker=reranker, fetch_k=args.fetch_k, mode=args.mode, chunks=args.chunks
        )
    ]
    for rank, hit in enumerate(hits, start=1):
        if args.json:
            print(
                json.dumps({"rank": rank, "id": hit.id, "score": hit.score, "text": hit.text, "metadata": hit.metadata})
            )
        else:
            print(f"{rank:>2}. {hit.score:8.4f}  {hit.id:<14} {one_line(hit.text, 90)}")
    return 0
