"""The ``rag-rerank`` command line. Every option can also come from an environment variable."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from rag_rerank.models import DEFAULT_BI_ENCODER, DEFAULT_CROSS_ENCODER, ModelNotFoundError
from rag_rerank.reranker import BACKENDS, DTYPES


def _env(name: str, default: str | None) -> str | None:
    return os.environ.get(f"RAG_RERANK_{name}", default)


def _store_options() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("store (environment: RAG_RERANK_<NAME>)")
    group.add_argument(
        "--collection",
        default=_env("COLLECTION", None),
        help="Chroma collection name (default: rag_rerank; the dataset's name for demo, eval and train)",
    )
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
    parser.add_argument(
        "--fetch-k", type=int, default=None, help="first-stage candidates to rerank (default 100; demo 50)"
    )
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

    dataset = argparse.ArgumentParser(add_help=False)
    group = dataset.add_argument_group("dataset")
    group.add_argument(
        "--data", default=_env("CRANFIELD", "../shared/data/cranfield"), help="Cranfield folder or BEIR dataset folder"
    )
    group.add_argument("--qrels-split", default="test", help="BEIR qrels file to use (default test)")
    group.add_argument(
        "--queries",
        choices=["all", "train", "test"],
        default=None,
        help="which queries of the fixed split (default: test for eval, train for train)",
    )
    group.add_argument("--test-fraction", type=float, default=0.5, help="share of judged queries held out")
    group.add_argument("--seed", type=int, default=0, help="seed of the query split (and of training)")

    evaluate = commands.add_parser(
        "eval", parents=[store, dataset], help="BM25 vs bi-encoder vs rerankers on a test collection"
    )
    evaluate.add_argument(
        "--cross-encoder", action="append", default=[], help="a cross-encoder to evaluate (repeatable)"
    )
    evaluate.add_argument("--depth", type=int, default=100, help="rerank depth: first-stage candidates reranked")
    evaluate.add_argument("--no-bm25", action="store_true", help="skip the BM25 baseline")
    evaluate.add_argument("--output", default=None, help="folder for results.json/.csv/.md and plots.png")

    train = commands.add_parser("train", parents=[store, dataset], help="fine-tune a cross-encoder on a collection")
    train.add_argument("--output", required=True, help="folder for the fine-tuned model")
    train.add_argument("--base-model", default=DEFAULT_BI_ENCODER, help="model to start from (default: MiniLM-L6)")
    train.add_argument("--epochs", type=int, default=4)
    train.add_argument("--batch-size", type=int, default=16)
    train.add_argument("--learning-rate", type=float, default=5e-5)
    train.add_argument("--max-length", type=int, default=128, help="tokens per (query, passage) pair")
    train.add_argument("--negatives", type=int, default=4, help="hard negatives per query, mined by the bi-encoder")
    train.add_argument("--random-negatives", type=int, default=4, help="random negatives per query")
    train.add_argument(
        "--title-pairs", action="store_true", help="add weak (title, abstract) pairs from the corpus itself"
    )

    serve = commands.add_parser("serve", parents=[store], help="run the rerank / RAG HTTP server")
    serve.add_argument("--host", default=_env("HOST", "127.0.0.1"), help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=int(_env("PORT", "8080")), help="port (default 8080)")
    serve.add_argument(
        "--cross-encoder", default=_env("CROSS_ENCODER", DEFAULT_CROSS_ENCODER), help="cross-encoder name or path"
    )
    serve.add_argument("--backend", default=_env("BACKEND", "torch"), choices=BACKENDS, help="scoring backend")
    serve.add_argument(
        "--dtype", default=_env("DTYPE", "float32"), choices=DTYPES, help="torch backend precision (default float32)"
    )
    serve.add_argument(
        "--compile",
        action="store_true",
        default=(_env("COMPILE", "") or "").lower() in {"1", "true", "yes"},
        help="torch.compile the torch backends at startup (1.3x on torch-int8; ~30 s to start)",
    )
    serve.add_argument(
        "--cache-size", type=int, default=int(_env("CACHE_SIZE", "0")), help="(query, passage) scores kept in memory"
    )
    serve.add_argument(
        "--api-key", default=_env("API_KEY", None), help="require 'Authorization: Bearer KEY' (env RAG_RERANK_API_KEY)"
    )
    serve.add_argument(
        "--max-documents", type=int, default=int(_env("MAX_DOCUMENTS", "1000")), help="documents per request"
    )
    serve.add_argument("--max-document-chars", type=int, default=int(_env("MAX_DOCUMENT_CHARS", "50000")))
    serve.add_argument("--max-request-bytes", type=int, default=int(_env("MAX_REQUEST_BYTES", "10000000")))
    serve.add_argument(
        "--max-batch-pairs", type=int, default=int(_env("MAX_BATCH_PAIRS", "256")), help="pairs per model pass"
    )
    serve.add_argument(
        "--max-queue", type=int, default=int(_env("MAX_QUEUE", "256")), help="waiting requests before 503"
    )
    serve.add_argument("--timeout", type=float, default=float(_env("TIMEOUT", "30")), help="seconds per request")
    serve.add_argument(
        "--llm-base-url", default=_env("LLM_BASE_URL", None), help="OpenAI-compatible endpoint for /v1/query"
    )
    serve.add_argument("--llm-model", default=_env("LLM_MODEL", None), help="model name at that endpoint")
    serve.add_argument("--llm-api-key", default=_env("LLM_API_KEY", None), help="API key for that endpoint")
    return parser


def cmd_serve(args: argparse.Namespace) -> int:
    from rag_rerank.server import ServerConfig, serve

    config = ServerConfig(
        cross_encoder=args.cross_encoder,
        backend=args.backend,
        dtype=args.dtype,
        compile=args.compile,
        cache_size=args.cache_size,
        device=args.device,
        collection=args.collection,
        chroma_path=args.chroma_path,
        chroma_host=args.chroma_host,
        chroma_port=args.chroma_port,
        bi_encoder=args.bi_encoder,
        api_key=args.api_key,
        max_documents=args.max_documents,
        max_document_chars=args.max_document_chars,
        max_request_bytes=args.max_request_bytes,
        max_batch_pairs=args.max_batch_pairs,
        max_queue=args.max_queue,
        request_timeout=args.timeout,
        llm_base_url=args.llm_base_url,
        llm_model=args.llm_model,
        llm_api_key=args.llm_api_key,
    )
    serve(config, host=args.host, port=args.port)
    return 0


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
    from rag_rerank import CrossEncoderReranker, two_stage_search

    store = _make_store(args)
    reranker = None if args.no_rerank else CrossEncoderReranker(args.cross_encoder, device=args.device)
    hits = [doc for doc, _ in two_stage_search(store, args.text, k=args.k, reranker=reranker, fetch_k=args.fetch_k)]
    for rank, hit in enumerate(hits, start=1):
        if args.json:
            print(
                json.dumps({"rank": rank, "id": hit.id, "score": hit.score, "text": hit.text, "metadata": hit.metadata})
            )
        else:
            print(f"{rank:>2}. {hit.score:8.4f}  {hit.id:<14} {_one_line(hit.text, 90)}")
    return 0


def _load_dataset(args: argparse.Namespace):
    """The dataset named by ``--data``, its store (ingested if empty) and the chosen queries."""
    from pathlib import Path

    from rag_rerank.data import load_beir, load_cranfield
    from rag_rerank.training import split_queries

    folder = Path(args.data)
    data = load_cranfield(folder) if (folder / "cran.all.1400").exists() else load_beir(folder, args.qrels_split)
    args.collection = args.collection or data.name
    store = _make_store(args)
    if store.count() == 0:
        print(f"collection {args.collection!r} is empty: ingesting {len(data.corpus)} documents of {data.name}")
        store.ingest(data.corpus, show_progress=True)
    if args.queries != "all":
        train_ids, test_ids = split_queries(data, args.test_fraction, args.seed)
        data = data.subset(train_ids if args.queries == "train" else test_ids)
    return data, store


def cmd_eval(args: argparse.Namespace) -> int:
    from rag_rerank import CrossEncoderReranker
    from rag_rerank.evaluation import evaluate

    data, store = _load_dataset(args)
    rerankers = {
        f"cross-encoder ({_short_name(name)})": CrossEncoderReranker(name, device=args.device)
        for name in args.cross_encoder
    }
    report = evaluate(data, store, rerankers, depth=args.depth, bm25=not args.no_bm25)
    print(f"\n{report.dataset}: {report.queries} queries ({args.queries})\n")
    print(report.to_markdown())
    if args.output:
        for path in report.write(args.output):
            print(f"wrote {path}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import time

    from rag_rerank.training import mine_pairs, train_cross_encoder

    data, store = _load_dataset(args)
    pairs = mine_pairs(
        data,
        store,
        list(data.queries),
        negatives_per_query=args.negatives,
        random_negatives=args.random_negatives,
        seed=args.seed,
    )
    if args.title_pairs:
        from rag_rerank.training import title_pairs

        pairs += title_pairs(data, store, seed=args.seed)
    positives = sum(pair.label > 0 for pair in pairs)
    print(f"training on {len(data.queries)} queries: {positives} positive and {len(pairs) - positives} negative pairs")
    started = time.perf_counter()
    output = train_cross_encoder(
        pairs,
        args.output,
        base_model=args.base_model,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        max_length=args.max_length,
        seed=args.seed,
    )
    print(f"trained in {time.perf_counter() - started:.0f}s; model saved to {output}")
    print(f"evaluate it: rag-rerank eval --data {args.data} --cross-encoder {output}")
    return 0


def _short_name(name: str) -> str:
    return name.rstrip("/").split("/")[-1]


def _one_line(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


# Per-command defaults. (argparse's set_defaults would leak between commands that share
# a parent parser, because parents share their argument objects.)
_DEFAULTS = {
    "ingest": {"collection": "rag_rerank"},
    "query": {"collection": "rag_rerank", "fetch_k": 100},
    "demo": {"collection": "cranfield", "fetch_k": 50},
    "eval": {"queries": "test"},
    "train": {"queries": "train"},
    "serve": {"collection": "rag_rerank"},
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name, value in _DEFAULTS[args.command].items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    handlers = {"ingest": cmd_ingest, "query": cmd_query, "eval": cmd_eval, "train": cmd_train, "serve": cmd_serve}
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
