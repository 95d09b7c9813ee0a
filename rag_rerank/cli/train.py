"""``rag-rerank train``: a cross-encoder trained to correct the hybrid first stage."""

from __future__ import annotations

import argparse

from rag_rerank.cli.options import Commands, load_dataset
from rag_rerank.models import DEFAULT_BI_ENCODER


def add_train(commands: Commands, store: argparse.ArgumentParser, dataset: argparse.ArgumentParser) -> None:
    """rag-rerank train --output FOLDER"""
    train = commands.add_parser(
        "train",
        parents=[store, dataset],
        help="train a cross-encoder that corrects the hybrid first stage, on the train split of each --data",
    )
    train.add_argument("--output", required=True, help="folder for the trained model")
    train.add_argument("--base-model", default=DEFAULT_BI_ENCODER, help="model to start from (default: MiniLM-L6)")
    train.add_argument("--epochs", type=int, default=3, help="the best dev epoch is kept (default 3)")
    train.add_argument("--depth", type=int, default=30, help="first-stage candidates per query (default 30)")
    train.add_argument("--group-size", type=int, default=8, help="passages per listwise group (default 8)")
    train.add_argument("--learning-rate", type=float, default=3e-5)
    train.add_argument("--max-length", type=int, default=320, help="tokens per (query, passage) pair")
    train.add_argument(
        "--dev-fraction", type=float, default=0.1, help="training queries held out to choose the epoch (default 0.1)"
    )
    train.add_argument("--fp16", action="store_true", help="save the weights in float16 (half the size)")


def cmd_train(args: argparse.Namespace) -> int:
    import random
    import time

    from rag_rerank.training import mine_candidates, train_reranker

    train, dev = [], []
    for folder in args.data:
        data, store = load_dataset(args, folder)
        ids = sorted(data.queries)
        random.Random(args.seed).shuffle(ids)
        n_dev = round(len(ids) * args.dev_fraction)
        train += mine_candidates(data, store, ids[n_dev:], depth=args.depth)
        dev += mine_candidates(data, store, ids[:n_dev], depth=args.depth)
        print(f"{data.name}: {len(ids) - n_dev} training and {n_dev} dev queries")
    print(f"training on {len(train)} queries with a relevant passage in the top {args.depth}; {len(dev)} dev queries")
    started = time.perf_counter()
    output = train_reranker(
        train,
        args.output,
        dev=dev,
        base_model=args.base_model,
        epochs=args.epochs,
        group_size=args.group_size,
        learning_rate=args.learning_rate,
        max_length=args.max_length,
        seed=args.seed,
        fp16=args.fp16,
    )
    print(f"trained in {time.perf_counter() - started:.0f}s; model saved to {output}")
    print(f"evaluate it: rag-rerank eval --data {args.data[0]} --cross-encoder {output}")
    return 0
