"""``rag-rerank demo`` and ``rag-rerank eval``: both stages measured on judged collections."""

from __future__ import annotations

import argparse
from typing import get_args

from rag_rerank.cli.options import Commands, env, load_dataset, make_store, on_ray, ray_options, short_name
from rag_rerank.inference.backend import NAMES as BACKENDS
from rag_rerank.retrieval.store import Mode


def add_demo(commands: Commands, store: argparse.ArgumentParser, rerank: argparse.ArgumentParser) -> None:
    """rag-rerank demo: the main job on a judged collection"""
    demo = commands.add_parser(
        "demo", parents=[store, rerank], help="ingest a judged collection, show and measure both stages"
    )
    demo.add_argument(
        "--data",
        default=env("DEMO_DATA", "../shared/data/scifact"),
        help="BEIR folder with a test split, or the Cranfield folder (default SciFact)",
    )
    demo.add_argument("--queries", default=None, help="test query ids to show, comma-separated (default: first 3)")
    demo.add_argument("-k", type=int, default=5, help="results per side (default 5)")
    demo.add_argument("--reingest", action="store_true", help="ingest again even if the collection is filled")
    demo.add_argument("--no-eval", action="store_true", help="skip measuring both stages on the whole test split")


def add_eval(commands: Commands, store: argparse.ArgumentParser, dataset: argparse.ArgumentParser) -> None:
    """rag-rerank eval: first stages and cross-encoders on test collections"""
    evaluate = commands.add_parser(
        "eval",
        parents=[store, dataset, ray_options("rerank the queries in parallel actors (the first stages run here)")],
        help="BM25, dense and hybrid first stages and rerankers on test collections",
    )
    evaluate.add_argument(
        "--cross-encoder", action="append", default=[], help="a cross-encoder to evaluate (repeatable)"
    )
    evaluate.add_argument(
        "--backend",
        action="append",
        choices=BACKENDS,
        default=[],
        help="scoring backend of the cross-encoders (repeatable: one row per backend, e.g. --backend onnx "
        "--backend onnx-int8 to see what int8 costs on your data; default auto)",
    )
    evaluate.add_argument("--depth", type=int, default=100, help="rerank depth: first-stage candidates reranked")
    evaluate.add_argument(
        "--first-stage",
        choices=get_args(Mode),
        default="hybrid",
        help="the first stage whose candidates the cross-encoders rerank (default hybrid)",
    )
    evaluate.add_argument(
        "--output", default=None, help="folder for results.json/.csv/.md and plots.png (one subfolder per dataset)"
    )


def cmd_demo(args: argparse.Namespace) -> int:
    from rag_rerank.data import load_collection
    from rag_rerank.demo import run_demo

    dataset = load_collection(args.data, "test")
    args.collection = args.collection or dataset.name
    return run_demo(args, dataset, make_store(args))


def cmd_eval(args: argparse.Namespace) -> int:
    import functools
    from pathlib import Path

    from rag_rerank import CrossEncoderReranker
    from rag_rerank.evaluation.harness import evaluate, summary_markdown

    backends = args.backend or ["auto"]
    makers = {
        f"{args.first_stage} + cross-encoder ({short_name(name)}{'' if backends == ['auto'] else ', ' + backend})": (
            functools.partial(CrossEncoderReranker, name, device=args.device, backend=backend)
        )
        for name in args.cross_encoder
        for backend in backends
    }
    rerankers = {label: on_ray(args, make) if args.ray is not None else make() for label, make in makers.items()}
    reports = []
    for folder in args.data:
        data, store = load_dataset(args, folder)
        report = evaluate(
            data,
            store,
            rerankers,
            depth=args.depth,
            rerank_over=args.first_stage,
            fusion_method=args.fusion,
            dense_weight=args.dense_weight,
        )
        print(f"\n{report.dataset}: {report.queries} queries ({args.queries})\n")
        print(report.to_markdown())
        if args.output:
            for path in report.write(Path(args.output) / report.dataset if len(args.data) > 1 else args.output):
                print(f"wrote {path}")
        reports.append(report)
    if len(reports) > 1:
        summary = summary_markdown(reports)
        print(f"\nall collections ({args.queries} queries)\n\n{summary}")
        if args.output:
            (Path(args.output) / "summary.md").write_text(summary + "\n")
            print(f"wrote {Path(args.output) / 'summary.md'}")
    return 0
