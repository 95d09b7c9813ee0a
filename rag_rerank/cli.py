"""The ``rag-rerank`` command line. Every option can also come from an environment variable."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeAlias, overload

from rag_rerank.models import DEFAULT_BI_ENCODER, DEFAULT_CROSS_ENCODER, ModelNotFoundError
from rag_rerank.rerank.backends import NAMES as BACKENDS
from rag_rerank.rerank.cross_encoder import DTYPES

if TYPE_CHECKING:  # the CLI imports the heavy modules only for the command it runs
    from rag_rerank import BiEncoder, ChromaStore, ChunkSpec, CrossEncoderReranker
    from rag_rerank.data import Dataset
    from rag_rerank.scale import RayReranker


Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"  # what add_subparsers returns


@overload
def _env(name: str, default: str) -> str: ...
@overload
def _env(name: str, default: None) -> str | None: ...
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
    group.add_argument(
        "--bi-encoder-backend",
        choices=["auto", "torch", "openvino"],
        default=_env("BI_ENCODER_BACKEND", "auto"),
        help="default auto: OpenVINO where installed (bfloat16 on CPUs with AVX-512 BF16/AMX, int8 with VNNI "
        "only), logged at start",
    )
    group.add_argument(
        "--bi-encoder-dtype",
        choices=["float32", "bfloat16", "float16", "int8"],
        default=_env("BI_ENCODER_DTYPE", None),
        help="bi-encoder precision (default: auto's choice; with --bi-encoder-backend auto, a dtype means torch; "
        "int8 needs --bi-encoder-backend openvino)",
    )
    group.add_argument("--device", default=_env("DEVICE", None), help="cpu, cuda, mps (default: best available)")
    return parser


def _rerank_options() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(
        "--cross-encoder",
        default=_env("CROSS_ENCODER", None),
        help=f"cross-encoder name or local path (default {DEFAULT_CROSS_ENCODER}; offline, the shipped model)",
    )
    parser.add_argument(
        "--fetch-k", type=int, default=None, help="first-stage candidates to rerank (default 100; demo 30)"
    )
    return parser


def _ray_options(what: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("Ray (optional: pip install 'rag-rerank[ray]')")
    group.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=_env("RAY", None),
        metavar="ADDRESS",
        help=f"{what} on Ray: the cluster at ADDRESS ('auto', 'ray://head:10001'), else $RAY_ADDRESS, "
        "else a local Ray on this machine",
    )
    group.add_argument("--actors", type=int, default=2, help="Ray actors, each holding its own models (default 2)")
    group.add_argument("--cpus-per-actor", type=float, default=1, help="CPUs each actor reserves (default 1)")
    group.add_argument("--gpus-per-actor", type=float, default=0, help="GPUs each actor reserves (default 0)")
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rag-rerank", description="Two-stage retrieval for RAG: Chroma bi-encoder + cross-encoder reranker."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    store, rerank, dataset = _store_options(), _rerank_options(), _dataset_options()
    _add_ingest(commands, store)
    _add_query(commands, store, rerank)
    _add_demo(commands, store, rerank)
    _add_eval(commands, store, dataset)
    _add_rerank_batch(commands)
    _add_train(commands, store, dataset)
    _add_serve(commands, store)
    return parser


def _dataset_options() -> argparse.ArgumentParser:
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
        "--fusion", choices=["weighted", "rrf"], default="weighted", help="how hybrid retrieval fuses BM25 and dense"
    )
    group.add_argument(
        "--dense-weight", type=float, default=0.5, help="weighted fusion: share of the dense score (default 0.5)"
    )
    return dataset


def _add_ingest(commands: Commands, store: argparse.ArgumentParser) -> None:
    """rag-rerank ingest PATHS..."""
    ingest = commands.add_parser(
        "ingest",
        parents=[store, _ray_options("chunk, embed and write in parallel actors (needs --chroma-host)")],
        help="chunk, embed and store documents",
    )
    ingest.add_argument("paths", nargs="+", help=".txt/.md files, .jsonl files, folders, or the Cranfield folder")
    ingest.add_argument("--chunk-size", type=int, default=256, help="chunk size in tokens (default 256)")
    ingest.add_argument("--chunk-overlap", type=int, default=32, help="overlap in tokens (default 32)")
    ingest.add_argument("--encoding", default="cl100k_base", help="tiktoken encoding for chunking")


def _add_query(commands: Commands, store: argparse.ArgumentParser, rerank: argparse.ArgumentParser) -> None:
    """rag-rerank query TEXT"""
    query = commands.add_parser("query", parents=[store, rerank], help="retrieve (and rerank) for one query")
    query.add_argument("text", help="the query")
    query.add_argument("-k", type=int, default=5, help="results to show (default 5)")
    query.add_argument("--no-rerank", action="store_true", help="first stage only")
    query.add_argument(
        "--mode", choices=["hybrid", "dense", "lexical"], default="hybrid", help="first stage (default hybrid)"
    )
    query.add_argument("--chunks", action="store_true", help="raw chunks instead of one result per document")
    query.add_argument("--json", action="store_true", help="print JSON lines instead of a table")


def _add_demo(commands: Commands, store: argparse.ArgumentParser, rerank: argparse.ArgumentParser) -> None:
    """rag-rerank demo: the main job on a judged collection"""
    demo = commands.add_parser(
        "demo", parents=[store, rerank], help="ingest a judged collection, show and measure both stages"
    )
    demo.add_argument(
        "--data",
        default=_env("DEMO_DATA", "../shared/data/scifact"),
        help="BEIR folder with a test split, or the Cranfield folder (default SciFact)",
    )
    demo.add_argument("--queries", default=None, help="test query ids to show, comma-separated (default: first 3)")
    demo.add_argument("-k", type=int, default=5, help="results per side (default 5)")
    demo.add_argument("--reingest", action="store_true", help="ingest again even if the collection is filled")
    demo.add_argument("--no-eval", action="store_true", help="skip measuring both stages on the whole test split")


def _add_eval(commands: Commands, store: argparse.ArgumentParser, dataset: argparse.ArgumentParser) -> None:
    """rag-rerank eval: first stages and cross-encoders on test collections"""
    evaluate = commands.add_parser(
        "eval",
        parents=[store, dataset, _ray_options("rerank the queries in parallel actors (the first stages run here)")],
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
        choices=["hybrid", "dense", "lexical"],
        default="hybrid",
        help="the first stage whose candidates the cross-encoders rerank (default hybrid)",
    )
    evaluate.add_argument(
        "--output", default=None, help="folder for results.json/.csv/.md and plots.png (one subfolder per dataset)"
    )


def _add_rerank_batch(commands: Commands) -> None:
    """rag-rerank rerank-batch IN OUT"""
    batch = commands.add_parser(
        "rerank-batch",
        parents=[_ray_options("read and score the rows in parallel actors")],
        help="rerank a JSONL or Parquet file of (query, candidates) rows; the same rows with scores out",
        description='Each row is {"query": ..., "candidates": [text or {"text": ...}, ...], ...}; the output '
        "row adds scores (one per candidate, input order), score_kind, truncated, truncated_by and rerank_ms. "
        "Give candidates in first-stage order, best first.",
    )
    batch.add_argument("input", help="a .jsonl or .parquet file")
    batch.add_argument("output", help="a .jsonl or .parquet file (written in the input's row order)")
    batch.add_argument(
        "--cross-encoder",
        default=_env("CROSS_ENCODER", None),
        help=f"cross-encoder name or path (default {DEFAULT_CROSS_ENCODER}; offline, the shipped model)",
    )
    batch.add_argument("--backend", default="auto", choices=BACKENDS, help="scoring backend (default auto)")
    batch.add_argument("--device", default=_env("DEVICE", None), help="cpu, cuda, mps (default: best available)")
    batch.add_argument("--rows", type=int, default=64, help="rows per batch read or sent to an actor (default 64)")


def _add_train(commands: Commands, store: argparse.ArgumentParser, dataset: argparse.ArgumentParser) -> None:
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


def _add_serve(commands: Commands, store: argparse.ArgumentParser) -> None:
    """rag-rerank serve: the HTTP server (in-process, or on Ray Serve with --ray)"""
    serve = commands.add_parser(
        "serve",
        parents=[store, _ray_options("serve the rerank endpoints from Ray Serve replicas")],
        help="run the rerank / RAG HTTP server",
    )
    serve.add_argument(
        "--replicas", type=int, default=1, help="with --ray: reranker replicas, each --cpus-per-actor CPUs (default 1)"
    )
    serve.add_argument("--host", default=_env("HOST", "127.0.0.1"), help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=int(_env("PORT", "8080")), help="port (default 8080)")
    serve.add_argument(
        "--cross-encoder",
        default=_env("CROSS_ENCODER", None),
        help=f"cross-encoder name or path (default {DEFAULT_CROSS_ENCODER}; offline, the shipped model)",
    )
    serve.add_argument(
        "--backend",
        default=_env("BACKEND", "auto"),
        choices=BACKENDS,
        help="scoring backend (default auto: the fastest that keeps rankings on this machine, logged at start)",
    )
    serve.add_argument(
        "--dtype",
        default=_env("DTYPE", None),
        choices=DTYPES,
        help="torch precision (default: auto's choice, or float32)",
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
    serve.add_argument(
        "--max-query-chars", type=int, default=int(_env("MAX_QUERY_CHARS", "4000")), help="characters per query"
    )
    serve.add_argument(
        "--max-query-tokens", type=int, default=int(_env("MAX_QUERY_TOKENS", "256")), help="model tokens per query"
    )
    serve.add_argument(
        "--serve-collection",
        action="append",
        default=[c for c in _env("SERVE_COLLECTIONS", "").split(",") if c],
        help="another collection requests may name (repeatable; --collection is always served)",
    )
    serve.add_argument(
        "--serve-existing-collections",
        action="store_true",
        default=_env("SERVE_EXISTING_COLLECTIONS", "").lower() in {"1", "true", "yes"},
        help="serve any collection that already exists in Chroma (never creates one)",
    )
    serve.add_argument(
        "--metrics-need-key",
        action="store_true",
        default=_env("METRICS_NEED_KEY", "").lower() in {"1", "true", "yes"},
        help="/metrics requires the API key too (/health and /ready stay open for probes)",
    )
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


def cmd_serve(args: argparse.Namespace) -> int:
    from rag_rerank.serve import ServerConfig, serve

    if args.ray is not None:
        from rag_rerank.scale import ray_serve

        print(f"serving /v1/rerank, /v2/rerank and /rerank from {args.replicas} Ray Serve replica(s)")
        ray_serve.run(
            _reranker_factory(args),
            host=args.host,
            port=args.port,
            replicas=args.replicas,
            cpus_per_replica=args.cpus_per_actor,
            address=args.ray or None,
        )
        return 0

    config = ServerConfig(
        cross_encoder=args.cross_encoder,
        backend=args.backend,
        dtype=args.dtype,
        compile=args.compile,
        cache_size=args.cache_size,
        device=args.device,
        collection=args.collection,
        collections=args.serve_collection,
        serve_existing_collections=args.serve_existing_collections,
        chroma_path=args.chroma_path,
        chroma_host=args.chroma_host,
        chroma_port=args.chroma_port,
        bi_encoder=args.bi_encoder,
        api_key=args.api_key,
        metrics_need_key=args.metrics_need_key,
        max_documents=args.max_documents,
        max_document_chars=args.max_document_chars,
        max_query_chars=args.max_query_chars,
        max_query_tokens=args.max_query_tokens,
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


def _make_store(args: argparse.Namespace, chunking: ChunkSpec | None = None) -> ChromaStore:
    from rag_rerank import ChromaStore, ChunkSpec

    return ChromaStore(
        args.collection,
        path=args.chroma_path,
        host=args.chroma_host,
        port=args.chroma_port,
        bi_encoder=_bi_encoder(args),
        chunking=chunking or ChunkSpec(),
    )


def _bi_encoder(args: argparse.Namespace) -> BiEncoder:
    from rag_rerank import BiEncoder

    return BiEncoder(args.bi_encoder, device=args.device, dtype=args.bi_encoder_dtype, backend=args.bi_encoder_backend)


def cmd_demo(args: argparse.Namespace) -> int:
    from rag_rerank.data import load_collection
    from rag_rerank.demo import run_demo

    dataset = load_collection(args.data, "test")
    args.collection = args.collection or dataset.name
    return run_demo(args, dataset, _make_store(args))


def cmd_ingest(args: argparse.Namespace) -> int:
    from rag_rerank import ChunkSpec, load_documents

    store = _make_store(args, ChunkSpec(args.chunk_size, args.chunk_overlap, args.encoding))
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

    store = _make_store(args)
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
            print(f"{rank:>2}. {hit.score:8.4f}  {hit.id:<14} {_one_line(hit.text, 90)}")
    return 0


def _load_dataset(args: argparse.Namespace, folder: str) -> tuple[Dataset, ChromaStore]:
    """The dataset in ``folder`` with the chosen queries, and its store (ingested if empty)."""
    from rag_rerank.data import load_collection

    data = load_collection(folder, args.queries, args.test_fraction, args.seed)
    collection = args.collection if args.collection and len(args.data) == 1 else data.name
    store = _make_store(argparse.Namespace(**{**vars(args), "collection": collection}))
    if store.count() == 0:
        print(f"collection {collection!r} is empty: ingesting {len(data.corpus)} documents of {data.name}")
        store.ingest(data.corpus, show_progress=True)
    return data, store


def cmd_eval(args: argparse.Namespace) -> int:
    import functools
    from pathlib import Path

    from rag_rerank import CrossEncoderReranker
    from rag_rerank.evaluation.harness import evaluate, summary_markdown

    backends = args.backend or ["auto"]
    makers = {
        f"{args.first_stage} + cross-encoder ({_short_name(name)}{'' if backends == ['auto'] else ', ' + backend})": (
            functools.partial(CrossEncoderReranker, name, device=args.device, backend=backend)
        )
        for name in args.cross_encoder
        for backend in backends
    }
    rerankers = {label: _on_ray(args, make) if args.ray is not None else make() for label, make in makers.items()}
    reports = []
    for folder in args.data:
        data, store = _load_dataset(args, folder)
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


def cmd_rerank_batch(args: argparse.Namespace) -> int:
    from rag_rerank.scale import rerank_file

    make = _reranker_factory(args)
    reranker = _on_ray(args, make, rows=args.rows) if args.ray is not None else make()
    rows = rerank_file(args.input, args.output, reranker, batch_rows=args.rows)
    print(f"reranked {rows} rows into {args.output}")
    return 0


def _reranker_factory(args: argparse.Namespace) -> Callable[[], CrossEncoderReranker]:
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


def _on_ray(args: argparse.Namespace, make: Callable[[], CrossEncoderReranker], rows: int = 8) -> RayReranker:
    from rag_rerank.scale import RayReranker

    return RayReranker(
        make,
        actors=args.actors,
        cpus_per_actor=args.cpus_per_actor,
        gpus_per_actor=args.gpus_per_actor,
        rows_per_task=rows,
        address=args.ray or None,
    )


def cmd_train(args: argparse.Namespace) -> int:
    import random
    import time

    from rag_rerank.training import mine_candidates, train_reranker

    train, dev = [], []
    for folder in args.data:
        data, store = _load_dataset(args, folder)
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


def _short_name(name: str) -> str:
    return name.rstrip("/").split("/")[-1]


def _one_line(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


# Per-command defaults. (argparse's set_defaults would leak between commands that share
# a parent parser, because parents share their argument objects.)
_DEFAULTS: dict[str, dict[str, object]] = {
    "ingest": {"collection": "rag_rerank"},
    "query": {"collection": "rag_rerank", "fetch_k": 100},
    "demo": {"fetch_k": 30},
    "eval": {"queries": "test"},
    "train": {"queries": "train"},
    "serve": {"collection": "rag_rerank"},
    "rerank-batch": {},
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name, value in _DEFAULTS[args.command].items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    if args.command in {"eval", "train"} and not args.data:
        args.data = [_env("CRANFIELD", "../shared/data/cranfield")]
    handlers = {
        "demo": cmd_demo,
        "ingest": cmd_ingest,
        "query": cmd_query,
        "eval": cmd_eval,
        "rerank-batch": cmd_rerank_batch,
        "train": cmd_train,
        "serve": cmd_serve,
    }
    try:
        return handlers[args.command](args)
    except (ModelNotFoundError, FileNotFoundError, ValueError, TypeError) as error:
        print(f"rag-rerank {args.command}: error: {error}", file=sys.stderr)
        return 2
    except ConnectionError as error:  # StoreUnavailable: the Chroma server is down
        print(f"rag-rerank {args.command}: error: {error}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
