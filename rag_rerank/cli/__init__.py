"""The ``rag-rerank`` command line: one module per command group (``store``: ingest and query,
``evaluate``: demo and eval, ``batch``: rerank-batch, ``train``, ``distil``, ``serve``, ``doctor``), the options they
share in ``options``. Every setting can also come from an environment variable (``--help`` names it)."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable, Sequence

from rag_rerank.cli import batch, distil, doctor, evaluate, options, serve, store, train
from rag_rerank.models import ModelNotFoundError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rag-rerank", description="Two-stage retrieval for RAG: Chroma bi-encoder + cross-encoder reranker."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    shared_store, rerank, dataset = options.store_options(), options.rerank_options(), options.dataset_options()
    store.add_ingest(commands, shared_store)
    store.add_query(commands, shared_store, rerank)
    evaluate.add_demo(commands, shared_store, rerank)
    evaluate.add_eval(commands, shared_store, dataset)
    batch.add_rerank_batch(commands)
    train.add_train(commands, shared_store, dataset)
    distil.add_distil(commands, shared_store, dataset)
    serve.add_serve(commands, shared_store)
    doctor.add_doctor(commands)
    return parser


def _version() -> str:
    from rag_rerank import __version__

    return __version__


# Per-command defaults. (argparse's set_defaults would leak between commands that share
# a parent parser, because parents share their argument objects.)
_DEFAULTS: dict[str, dict[str, object]] = {
    "ingest": {"collection": "rag_rerank"},
    "query": {"collection": "rag_rerank", "fetch_k": 100},
    "demo": {"fetch_k": 30},
    "eval": {"queries": "test"},
    "train": {"queries": "train"},
    "distil": {"queries": "train"},
    "serve": {"collection": "rag_rerank"},
    "rerank-batch": {},
    "doctor": {},
}


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "demo": evaluate.cmd_demo,
    "ingest": store.cmd_ingest,
    "query": store.cmd_query,
    "eval": evaluate.cmd_eval,
    "rerank-batch": batch.cmd_rerank_batch,
    "train": train.cmd_train,
    "distil": distil.cmd_distil,
    "serve": serve.cmd_serve,
    "doctor": doctor.cmd_doctor,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.command_line = shlex.join(["rag-rerank", *(sys.argv[1:] if argv is None else argv)])  # for records
    for name, value in _DEFAULTS[args.command].items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    if args.command in {"eval", "train"} and not args.data:
        args.data = [options.env("CRANFIELD", "../shared/data/cranfield")]
    try:
        return HANDLERS[args.command](args)
    except (ModelNotFoundError, FileNotFoundError, ValueError, TypeError) as error:
        print(f"rag-rerank {args.command}: error: {error}", file=sys.stderr)
        return 2
    except ConnectionError as error:  # StoreUnavailable: the Chroma server is down
        print(f"rag-rerank {args.command}: error: {error}", file=sys.stderr)
        return 3
