"""What several commands share: the store, rerank, Ray and dataset options, and the objects they describe."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeAlias, get_args

from rag_rerank.retrieval.store import Fusion
from rag_rerank.serve.config import STORE_SETTINGS, ServerConfig
from rag_rerank.settings import add_flags

if TYPE_CHECKING:  # the CLI imports the heavy modules only for the command it runs
    from rag_rerank import BiEncoder, ChromaStore, ChunkSpec, CrossEncoderReranker
    from rag_rerank.data import Dataset
    from rag_rerank.scale import RayReranker


Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"  # what add_subparsers returns


def env(name: str, default: str) -> str:
    """``RAG_RERANK_<name>``, else ``default``."""
    return os.environ.get(f"RAG_RERANK_{name}", default)


def store_options() -> argparse.ArgumentParser:
    """The store's settings (declared in ``ServerConfig``); the collection defaults to the command's own."""
    parser = argparse.ArgumentParser(add_help=False)
    add_flags(parser.add_argument_group("store"), ServerConfig, STORE_SETTINGS, collection=None)
    return parser


def rerank_options() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    add_flags(parser, ServerConfig, ["cross_encoder"])
    parser.add_argument(
        "--fetch-k", type=int, default=None, help="first-stage candidates to rerank (default 100; demo 30)"
    )
    return parser


def ray_options(what: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("Ray (optional: pip install 'rag-rerank[ray]')")
    group.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=os.environ.get("RAG_RERANK_RAY"),
        metavar="ADDRESS",
        help=f"{what} on Ray: the cluster at ADDRESS ('auto', 'ray://head:10001'), else $RAY_ADDRESS, "
        "else a local Ray on this machine",
    )
    group.add_argument("--actors", type=int, default=2, help="Ray actors, each holding its own models (default 2)")
    group.add_argument("--cpus-per-actor", type=float, default=1, help="CPUs each actor reserves (default 1)")
    group.add_argument("--gpus-per-actor", type=float, default=0, help="GPUs each actor reserves (default 0)")
    return parser


def dataset_options() -> argparse.ArgumentParser:
    """--data, --queries and the split and fusion options of eval and train."""
    dataset = argparse.ArgumentParser(add_help=False)
    group = dataset.add_argument_group("dataset")
    group.add_argument(
        "--data",
        action="append",
        default=None,
        help="Cranfield folder or BEIR dataset folder (repeatable; default $RAG_RERANK_CRANFIELD or "
        "../shared/data/cranfield)",
    )
    group.add_argument(
        "--queries",
        choices=["all", "train", "test"],
        default=None,
        help="which split (default: test for eval, train for train). BEIR folders use their own qrels "
        "files as splits; Cranfield is cut in half (fixed, seeded)",
    )
    group.add_argument("--test-fraction", type=float, default=0.5, help="Cranfield: share of judged queries held out")
    group.add_argument("--seed", type=int, default=0, help="seed of the Cranfield split (and of training)")
    group.add_argument(
        "--fusion", choices=get_args(Fusion), default="weighted", help="how hybrid retrieval fuses BM25 and dense"
    )
    group.add_argument(
        "--dense-weight", type=float, default=0.5, help="weighted fusion: share of the dense score (default 0.5)"
    )
    return dataset


def make_store(args: argparse.Namespace, chunking: ChunkSpec | None = None) -> ChromaStore:
    from rag_rerank import ChromaStore, ChunkSpec

    return ChromaStore(
        args.collection,
        path=args.chroma_path,
        host=args.chroma_host,
        port=args.chroma_port,
        bi_encoder=bi_encoder(args),
        chunking=chunking or ChunkSpec(),
    )


def bi_encoder(args: argparse.Namespace) -> BiEncoder:
    from rag_rerank import BiEncoder

    return BiEncoder(args.bi_encoder, device=args.device, dtype=args.bi_encoder_dtype, backend=args.bi_encoder_backend)


def load_dataset(args: argparse.Namespace, folder: str) -> tuple[Dataset, ChromaStore]:
    """The dataset in ``folder`` with the chosen queries, and its store (ingested if empty)."""
    from rag_rerank.data import load_collection

    data = load_collection(folder, args.queries, args.test_fraction, args.seed)
    collection = (
        args.collection if args.collection and len(args.data or []) == 1 else default_collection(args, data.name)
    )
    store = make_store(argparse.Namespace(**{**vars(args), "collection": collection}))
    if store.count() == 0:
        print(f"collection {collection!r} is empty: ingesting {len(data.corpus)} documents of {data.name}")
        store.ingest(data.corpus, show_progress=True)
    return data, store


def default_collection(args: argparse.Namespace, name: str) -> str:
    """A dataset's collection: its name, with the bi-encoder's where that is not the default (each
    bi-encoder embeds the corpus its own way, so each has its own collection)."""
    from rag_rerank.models import DEFAULT_BI_ENCODER

    return name if args.bi_encoder == DEFAULT_BI_ENCODER else f"{name}-{short_name(args.bi_encoder)}"


def reranker_factory(args: argparse.Namespace) -> Callable[[], CrossEncoderReranker]:
    """The reranker the options describe, as a factory each process (or Ray actor) calls once."""
    import functools

    from rag_rerank import CrossEncoderReranker

    return functools.partial(  # serve's precision and cache options too, where the command has them
        CrossEncoderReranker,
        args.cross_encoder,
        backend=getattr(args, "backend", "auto"),
        device=args.device,
        dtype=getattr(args, "dtype", None),
        compile=getattr(args, "compile", False),
        cache_size=getattr(args, "cache_size", 0),
    )


def on_ray(args: argparse.Namespace, make: Callable[[], CrossEncoderReranker], rows: int = 8) -> RayReranker:
    from rag_rerank.scale import RayReranker

    return RayReranker(
        make,
        actors=args.actors,
        cpus_per_actor=args.cpus_per_actor,
        gpus_per_actor=args.gpus_per_actor,
        rows_per_task=rows,
        address=args.ray or None,
    )


def short_name(name: str) -> str:
    return name.rstrip("/").split("/")[-1]


def one_line(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
