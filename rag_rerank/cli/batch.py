"""``rag-rerank rerank-batch``: a file of (query, candidates) rows reranked, in process or on Ray."""

from __future__ import annotations

import argparse

from rag_rerank.cli.options import Commands, on_ray, ray_options, reranker_factory
from rag_rerank.serve.config import ServerConfig
from rag_rerank.settings import add_flags


def add_rerank_batch(commands: Commands) -> None:
    """rag-rerank rerank-batch IN OUT"""
    batch = commands.add_parser(
        "rerank-batch",
        parents=[ray_options("read and score the rows in parallel actors")],
        help="rerank a JSONL or Parquet file of (query, candidates) rows; the same rows with scores out",
        description='Each row is {"query": ..., "candidates": [text or {"text": ...}, ...], ...}; the output '
        "row adds scores (one per candidate, input order), score_kind, truncated, truncated_by and rerank_ms. "
        "Give candidates in first-stage order, best first.",
    )
    batch.add_argument("input", help="a .jsonl or .parquet file")
    batch.add_argument("output", help="a .jsonl or .parquet file (written in the input's row order)")
    add_flags(batch, ServerConfig, ["cross_encoder", "backend", "device"])
    batch.add_argument("--rows", type=int, default=64, help="rows per batch read or sent to an actor (default 64)")


def cmd_rerank_batch(args: argparse.Namespace) -> int:
    from rag_rerank.scale import rerank_file

    make = reranker_factory(args)
    reranker = on_ray(args, make, rows=args.rows) if args.ray is not None else make()
    rows = rerank_file(args.input, args.output, reranker, batch_rows=args.rows)
    print(f"reranked {rows} rows into {args.output}")
    return 0
