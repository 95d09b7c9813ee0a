"""``rag-rerank serve``: the HTTP server, in process or on Ray Serve; its flags are ``ServerConfig``'s settings."""

from __future__ import annotations

import argparse

from rag_rerank.cli.options import Commands, env, ray_options, reranker_factory
from rag_rerank.serve.config import STORE_SETTINGS, ServerConfig
from rag_rerank.settings import add_flags, flags, from_flags


def add_serve(commands: Commands, store: argparse.ArgumentParser) -> None:
    """rag-rerank serve: the HTTP server (in-process, or on Ray Serve with --ray)"""
    serve = commands.add_parser(
        "serve",
        parents=[store, ray_options("serve the rerank endpoints from Ray Serve replicas")],
        help="run the rerank / RAG HTTP server",
    )
    serve.add_argument(
        "--replicas", type=int, default=1, help="with --ray: reranker replicas, each --cpus-per-actor CPUs (default 1)"
    )
    serve.add_argument(
        "--host", default=env("HOST", "127.0.0.1"), help="bind address (env RAG_RERANK_HOST; default 127.0.0.1)"
    )
    serve.add_argument(
        "--port", type=int, default=int(env("PORT", "8080")), help="port (env RAG_RERANK_PORT; default 8080)"
    )
    server_only = [one.name for one in flags(ServerConfig) if one.name not in STORE_SETTINGS]
    add_flags(serve.add_argument_group("server"), ServerConfig, server_only)


def cmd_serve(args: argparse.Namespace) -> int:
    from rag_rerank.serve import ServerConfig, serve

    if args.ray is not None:
        from rag_rerank.scale import ray_serve

        print(f"serving /v1/rerank, /v2/rerank and /rerank from {args.replicas} Ray Serve replica(s)")
        ray_serve.run(
            reranker_factory(args),
            host=args.host,
            port=args.port,
            replicas=args.replicas,
            cpus_per_replica=args.cpus_per_actor,
            address=args.ray or None,
        )
        return 0

    config = from_flags(ServerConfig, args)
    serve(config, host=args.host, port=args.port)
    return 0
