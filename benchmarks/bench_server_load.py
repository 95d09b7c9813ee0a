"""Bounded load test of the rerank server, on loopback only.

    python benchmarks/bench_server_load.py [--clients 50] [--seconds 20] [--documents 20]

Starts the real server twice on 127.0.0.1 (a free port), each time with the same model:
once batching concurrent requests onto the model (the default) and once one request at a
time (``max_batch_pairs=1``). ``--clients`` concurrent clients send Cohere-shaped rerank
requests for ``--seconds`` and stop by themselves. Prints throughput, p50/p99 latency and
errors for both, and the ratio. Without --model it uses MiniLM-L6 weights with a fresh
head (the real cost of a MiniLM cross-encoder).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import threading
import time

from bench_common import CRANFIELD, model_or_fresh_head, print_table


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def load(url: str, clients: int, seconds: float, documents: list[str]) -> dict[str, float]:
    import httpx

    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def client(i: int, http: httpx.AsyncClient) -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                response = await http.post(
                    f"{url}/v1/rerank", json={"query": f"query {i} about wings", "documents": documents}
                )
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors += 1
            except httpx.HTTPError:
                errors += 1

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(i, http) for i in range(clients)))
        elapsed = time.perf_counter() - started
    ordered = sorted(latencies) or [float("nan")]
    return {
        "requests/s": len(latencies) / elapsed,
        "pairs/s": len(latencies) * len(documents) / elapsed,
        "p50 ms": 1000 * statistics.median(ordered),
        "p99 ms": 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
        "ok": len(latencies),
        "errors": errors,
    }


def run(model: str, max_batch_pairs: int, args) -> dict[str, float]:
    import uvicorn

    from rag_rerank import CrossEncoderReranker, load_cranfield
    from rag_rerank.serve import ServerConfig, create_app

    documents = [d.text for d in load_cranfield(args.data).corpus[: args.documents]]
    config = ServerConfig(cross_encoder=model, max_batch_pairs=max_batch_pairs, max_queue=10_000, request_timeout=120)
    reranker = CrossEncoderReranker(model, batch_size=32, device="cpu")
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(config, reranker), host="127.0.0.1", port=port, log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        return asyncio.run(load(f"http://127.0.0.1:{port}", args.clients, args.seconds, documents))
    finally:
        server.should_exit = True
        thread.join(timeout=60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--data", default=str(CRANFIELD))
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--documents", type=int, default=20, help="documents per request")
    args = parser.parse_args()
    if args.clients > 500 or args.seconds > 300:
        parser.error("keep the load bounded: at most 500 clients and 300 seconds")

    model = model_or_fresh_head(args.model)

    print(f"{args.clients} clients x {args.seconds:.0f}s, {args.documents} documents per request, loopback only\n")
    rows = {"one request at a time": run(model, 1, args), "batched (256 pairs)": run(model, 256, args)}
    print_table(
        [
            {"mode": name, **{key: f"{v:.1f}" if isinstance(v, float) else str(v) for key, v in row.items()}}
            for name, row in rows.items()
        ]
    )
    single, batched = rows.values()
    print(f"\nbatching: {batched['requests/s'] / single['requests/s']:.2f}x the throughput of one request at a time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
