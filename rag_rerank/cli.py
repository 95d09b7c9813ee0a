"""The ``rag-rerank`` command line. Every option can also come from an environment variable."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from rag_rerank.models import DEFAULT_BI_ENCODER, DEFAULT_CROSS_ENCODER, ModelNotFoundError


def _env(name: str, default: str | None) -> str | None:
    return os.environ.get(f"RAG_RERANK_{name}", default)


def _store_options() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("store (environment: RAG_RERANK_<NAME>)")
    group.add_argument("--collection", default=_env("COLLECTION", "rag_rerank"), help="Chroma collection name")
    group.add_argument("--chroma-path", default=_env("CHROMA_PATH", ".chroma"), help="folder of the embedded Chroma")
    group.add_argument("--chroma-host", default=_env("CHROMA_HOST", None), help="use a Chroma server at this host")
    group.add_argument("--chroma-port", type=int, default=int(_env("CHROMA_PORT", "8000")), help="Chroma server port")
    group.add_argument("--bi-encoder", default=_env("BI_ENCODER", DEFAULT_BI_ENCODER), help="bi-encoder name or path")
    group.add_argument("--device", default=_env("DEVICE", None), help="cpu, cuda, mps (default: best available)")
    return parser


def _rerank_options() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(
        "--cross-encoder",
        default=_env("CROSS_ENCODER", DEFAULT_CROSS_ENCODER),
        help="cross-encoder name or local path (env RAG_RERANK_CROSS_ENCODER)",
    )
    parser.add_argument("--fetch-k", type=int, default=100, help="first-stage candidates to rerank")
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rag-rerank", description="Two-stage retrieval for RAG: Chroma bi-encoder + cross-encoder reranker."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    store, rerank = _store_options(), _rerank_options()

    ingest = commands.add_parser("ingest", parents=[store], help="chunk, embed and store documents")
    ingest.add_argument("paths", nargs="+", help=".txt/.md files, .jsonl files, folders, or the Cranfield folder")
    ingest.add_argument("--chunk-size", type=int, default=256, help="chunk size in tokens (default 256)")
    ingest.add_argument("--chunk-overlap", type=int, default=32, help="overlap in tokens (default 32)")
    ingest.add_argument("--encoding", default="cl100k_base", help="tiktoken encoding for chunking")

    query = commands.add_parser("query", parents=[store, rerank], help="retrieve (and rerank) for one query")
    query.add_argument("text", help="the query")
    query.add_argument("-k", type=int, default=5, help="results to show (default 5)")
    query.add_argument("--no-rerank", action="store_true", help="first stage only")
    query.add_argument("--json", action="store_true", help="print JSON lines instead of a table")

    demo = commands.add_parser("demo", parents=[store, rerank], help="ingest Cranfield and compare both stages")
    demo.add_argument("--data", default=_env("CRANFIELD", "../shared/data/cranfield"), help="Cranfield folder")
    demo.add_argument("--queries", default="1,23,60", help="Cranfield query numbers to show")
    demo.add_argument("-k", type=int, default=5, help="results per side (default 5)")
    demo.add_argument("--reingest", action="store_true", help="ingest again even if the collection is filled")
    demo.set_defaults(collection=_env("COLLECTION", "cranfield"), fetch_k=50)
    return parser


def _version() -> str:
    from rag_rerank import __version__

    return __version__


def _make_store(args: argparse.Namespace, chunking=None):
    from rag_rerank import ChromaStore, ChunkSpec

    return ChromaStore(
        args.collection,
        path=args.chroma_path,
        host=args.chroma_host,
        port=args.chroma_port,
        bi_encoder=_bi_encoder(args),
        chunking=chunking or ChunkSpec(),
    )


def _bi_encoder(args: argparse.Namespace):
    from rag_rerank import BiEncoder

    return BiEncoder(args.bi_encoder, device=args.device)


def cmd_ingest(args: argparse.Namespace) -> int:
    from rag_rerank import ChunkSpec, load_documents

    store = _make_store(args, ChunkSpec(args.chunk_size, args.chunk_overlap, args.encoding))
    documents = load_documents(args.paths)
    report = store.ingest(documents, show_progress=True)
    print(
        f"ingested {report.documents} documents as {report.chunks} chunks into {args.collection!r} "
        f"({store.count()} chunks in total)"
    )
    if report.empty:
        print(f"{len(report.empty)} documents had no text and were not stored: {', '.join(report.empty[:20])}")
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    from rag_rerank import CrossEncoderReranker

    store = _make_store(args)
    if args.no_rerank:
        hits = store.query(args.text, k=args.k)
    else:
        reranker = CrossEncoderReranker(args.cross_encoder, device=args.device)
        hits = reranker.rerank(args.text, store.query(args.text, k=max(args.k, args.fetch_k)), top_n=args.k)
    for rank, hit in enumerate(hits, start=1):
        if args.json:
            print(json.dumps({"rank": rank, "id": hit.id, "score": hit.score, "text": hit.text, "metadata": hit.metadata}))
        else:
            print(f"{rank:>2}. {hit.score:8.4f}  {hit.id:<14} {_one_line(hit.text, 90)}")
    return 0


def _one_line(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"ingest": cmd_ingest, "query": cmd_query}
    try:
        if args.command == "demo":
            from rag_rerank.demo import run_demo

            return run_demo(args)
        return handlers[args.command](args)
    except (ModelNotFoundError, FileNotFoundError, ValueError, TypeError) as error:
        print(f"rag-rerank {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
