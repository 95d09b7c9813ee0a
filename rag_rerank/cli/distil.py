"""``rag-rerank distil``: a teacher's scores of training queries' candidates, kept, and a student trained on them."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, get_args

from rag_rerank.cli.options import Commands, load_dataset

if TYPE_CHECKING:
    from pathlib import Path

    from rag_rerank.data import Dataset
    from rag_rerank.rerank.llm.protocol import LLM
    from rag_rerank.retrieval.store import ChromaStore
    from rag_rerank.training.distil import Recipe
    from rag_rerank.training.queries import TrainingQuery


def add_distil(commands: Commands, store: argparse.ArgumentParser, dataset: argparse.ArgumentParser) -> None:
    """rag-rerank distil --teacher SPEC --scores FILE [--output FOLDER]"""
    from rag_rerank.training.distil import Loss, Recipe
    from rag_rerank.training.students import STUDENTS

    distil = commands.add_parser(
        "distil",
        parents=[store, dataset],
        help="score training queries' candidates with a slow teacher (kept, resumable) and train a fast "
        "student on those scores, never on human judgements",
    )
    group = distil.add_argument_group("teacher and queries")
    group.add_argument(
        "--teacher",
        default="query-likelihood",
        metavar="SPEC",
        help="cross-encoder[:MODEL] or an LLM reranker KIND[:MODEL] (query-likelihood, yes-no, pointwise, "
        "listwise); default query-likelihood (the offline Gemma 3 270M). Its own scores are kept, never fused "
        "with the first stage: a cross-encoder student is fused where it runs",
    )
    group.add_argument(
        "--scores",
        required=True,
        metavar="FILE",
        help="the teacher's scores (.jsonl or .jsonl.gz), read and extended: a run again scores only what it lacks",
    )
    group.add_argument("--depth", type=int, default=20, help="first-stage candidates per query (default 20)")
    group.add_argument(
        "--generate-for",
        action="append",
        default=[],
        metavar="FOLDER",
        help="a corpus the LLM writes queries for: a BEIR or Cranfield folder (its queries are not read), a folder "
        "of .txt/.md files or a .jsonl file (repeatable)",
    )
    group.add_argument("--generate", type=int, default=100, help="documents per --generate-for corpus (default 100)")
    group.add_argument(
        "--generator", default=None, help="the LLM that writes them (default: the offline base model, gemma-3-270m)"
    )
    group.add_argument(
        "--queries-file",
        default=None,
        metavar="FILE",
        help="queries written for a corpus (JSON lines: corpus, query_id, text, written_for), read and extended "
        "(default: beside --scores)",
    )
    group.add_argument("--llm-cache", default=None, metavar="FILE", help="an LLM teacher's pair scores, kept too")
    group.add_argument("--label-only", action="store_true", help="score and keep, train nothing")
    train = distil.add_argument_group("student")
    train.add_argument("--output", default=None, help="a new folder for the student (needed unless --label-only)")
    train.add_argument("--student", choices=list(STUDENTS), default="cross-encoder", help="default cross-encoder")
    train.add_argument(
        "--base-model",
        default=None,
        help="the model the student starts from (default: the shipped cross-encoder, or all-MiniLM-L6-v2)",
    )
    defaults = Recipe()
    train.add_argument("--loss", choices=get_args(Loss), default=defaults.loss, help="default kl (listwise)")
    train.add_argument("--epochs", type=int, default=defaults.epochs)
    train.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    train.add_argument("--queries-per-step", type=int, default=defaults.queries_per_step)
    train.add_argument("--max-length", type=int, default=defaults.max_length, help="tokens per pair")
    train.add_argument("--temperature", type=float, default=defaults.temperature, help="kl: the teacher's")
    train.add_argument(
        "--sample", type=int, default=None, help="candidates of a query per step, drawn each epoch (default: all)"
    )
    train.add_argument("--dev-fraction", type=float, default=defaults.dev_fraction, help="held out to pick the epoch")
    train.add_argument("--fp16", action="store_true", help="save a cross-encoder student's weights in float16")


def cmd_distil(args: argparse.Namespace) -> int:
    import functools
    import random
    from pathlib import Path

    from rag_rerank.training.distil import distil
    from rag_rerank.training.teacher import TeacherScores, label, make_teacher

    if not args.label_only and not args.output:
        raise ValueError("give --output FOLDER for the student, or --label-only")
    if args.output and Path(args.output).exists() and any(Path(args.output).iterdir()):
        raise ValueError(f"{args.output} is not empty: give a new folder for the student")
    recipe = recipe_of(args)
    scores = TeacherScores(args.scores, args.teacher, args.depth, command=args.command_line)
    queries, stores, judgements = training_queries(args)
    random.Random(args.seed).shuffle(queries)  # labelled in a random order: a run cut short leaves a fair sample
    teacher = functools.partial(make_teacher, args.teacher, cache_file=args.llm_cache)
    rows = label(queries, stores, teacher, scores) if queries else list(scores.rows.values())
    print(f"{len(rows)} labelled queries ({len(scores.rows)} kept in {scores.path})")
    if args.label_only:
        return 0
    output = distil(
        rows, args.output, student=args.student, base_model=args.base_model, recipe=recipe,
        teacher=scores.header, judgements=judgements, fp16=args.fp16, device=args.device,
    )  # fmt: skip
    print_outcome(output, args.student)
    return 0


def recipe_of(args: argparse.Namespace) -> Recipe:
    from rag_rerank.training.distil import Recipe

    recipe = Recipe(
        args.loss, args.epochs, args.queries_per_step, args.learning_rate, args.max_length,
        args.temperature, args.dev_fraction, args.seed, args.sample,
    )  # fmt: skip
    recipe.check()  # before anything is scored
    return recipe


def print_outcome(output: Path, student: str) -> None:
    import json

    from rag_rerank.training.distil import DISTILLED_FILE

    record = json.loads((output / DISTILLED_FILE).read_text())
    print(f"trained in {record['seconds']}s on {record['device']}")
    flag = "--cross-encoder" if student == "cross-encoder" else "--bi-encoder"
    print(f"student saved to {output}; judge it: rag-rerank eval --data FOLDER {flag} {output}")


def training_queries(
    args: argparse.Namespace,
) -> tuple[list[TrainingQuery], dict[str, ChromaStore], dict[tuple[str, str], dict[str, int]]]:
    """The training queries of each --data and the queries written for each --generate-for corpus, with
    every corpus's store and the --data queries' judgements (read only to choose a student's fusion weight)."""
    from rag_rerank.training.queries import collection_queries

    queries, stores, judgements = [], {}, {}
    for folder in args.data or []:
        data, stores_one = load_dataset(args, folder)
        queries += collection_queries(data)
        stores[data.name] = stores_one
        judgements.update({(data.name, query_id): dict(gains) for query_id, gains in data.qrels.items()})
    corpora = {}
    for path in args.generate_for:
        data, store = corpus_and_store(args, path)
        corpora[data.name], stores[data.name] = data, store
    if corpora:
        queries += written_queries(args, corpora)
    return queries, stores, judgements


def corpus_and_store(args: argparse.Namespace, path: str) -> tuple[Dataset, ChromaStore]:
    """A corpus to write queries for (a BEIR or Cranfield folder, a folder of .txt/.md files, a .jsonl
    file: its queries, if any, are not read) and its store, filled if empty."""
    from pathlib import Path

    from rag_rerank.cli.options import default_collection, make_store
    from rag_rerank.data import Dataset, load_documents

    source = Path(path)
    beir = source / "corpus.jsonl"
    corpus = load_documents([beir if beir.exists() else source])
    name = source.name if source.is_dir() else source.stem
    if not corpus:
        raise ValueError(f"the corpus {path} is empty: there is no document to write queries for")
    store = make_store(argparse.Namespace(**{**vars(args), "collection": default_collection(args, name)}))
    if store.count() == 0:
        print(f"collection {name!r} is empty: ingesting {len(corpus)} documents")
        store.ingest(corpus, show_progress=True)
    return Dataset(name, corpus, {}), store


def written_queries(args: argparse.Namespace, corpora: dict[str, Dataset]) -> list[TrainingQuery]:
    """The queries file's queries, after the generator writes those each corpus still lacks."""
    from pathlib import Path

    from rag_rerank.training.queries import generate_queries, read_queries, write_queries

    path = Path(args.queries_file or Path(args.scores).with_name("generated-queries.jsonl"))
    have = read_queries(path, corpora) if path.exists() else []
    for name, data in corpora.items():
        written = {q.written_for for q in have if q.corpus == name and q.written_for}
        if len(written) < min(args.generate, len(data.corpus)):
            llm = writer(args.generator)
            for query in generate_queries(llm, data, args.generate, seed=args.seed, skip=written):
                write_queries(path, [query])  # one at a time: an interrupted run keeps what it wrote
    return read_queries(path, corpora) if path.exists() else []


def writer(model: str | None) -> LLM:
    """The LLM that writes queries: a server as it is, a local model with answers cut at a query's length."""
    from rag_rerank.inference.llm import load_llm
    from rag_rerank.inference.llm.transformers_lm import TransformersLM
    from rag_rerank.training.queries import QUERY_TOKENS

    if model and model.startswith(("http://", "https://")):
        return load_llm(model)
    return TransformersLM(model, max_new_tokens=QUERY_TOKENS)
