"""Ray against in-process, in one run: ingest documents/s and rerank pairs/s with 1 and 2 Ray actors.

Ingest writes MEDLINE abstracts (by default 600 of them) to a real `chroma run` server (a fresh
collection per run); reranking scores Cranfield queries against 100 candidates each with the shipped
model. In-process uses every core in one process (torch's threads); each actor reserves one CPU
(one torch thread). "job" is a whole job's wall-clock time; a Ray job includes its fixed cost (actors
starting, each loading its models, Ray Data planning), measured as the time of a tiny job of the same
kind; "steady" rates leave it out: what a long job approaches. In-process times exclude model loading.
Prints one table and the CPU it ran on.

    python benchmarks/bench_ray.py [--documents 600] [--queries 12] [--backend torch]
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench_common
import httpx

from rag_rerank import BiEncoder, ChromaStore, CrossEncoderReranker, load_collection, load_cranfield
from rag_rerank.scale import RayReranker, ingest_on_ray, start_ray

SHARED = bench_common.ROOT.parent / "shared" / "data"
MODEL = str(bench_common.ROOT / "models" / "rag-rerank-minilm-l6")


def chroma_server(folder: str, port: int = 8765) -> subprocess.Popen:
    chroma = shutil.which("chroma", path=str(Path(sys.executable).parent)) or "chroma"
    process = subprocess.Popen(
        [chroma, "run", "--path", folder, "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    for _ in range(300):
        try:
            if httpx.get(f"http://localhost:{port}/api/v2/heartbeat", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("chroma run did not start")


def timed(run, *args, **kwargs) -> float:
    started = time.perf_counter()
    run(*args, **kwargs)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=600, help="MEDLINE abstracts to ingest (default 600)")
    parser.add_argument("--queries", type=int, default=12, help="Cranfield queries to rerank (default 12)")
    parser.add_argument("--candidates", type=int, default=100, help="candidates per query (default 100)")
    parser.add_argument("--backend", default="torch", help="reranker backend (default torch, float32)")
    args = parser.parse_args()
    import torch

    cores = os.cpu_count() or 1
    docs = load_collection(SHARED / "medline").corpus[: args.documents]
    cranfield = load_cranfield(SHARED / "cranfield")
    queries = list(cranfield.queries.values())[: args.queries]
    requests = [(q, cranfield.corpus[i * 7 : i * 7 + args.candidates]) for i, q in enumerate(queries)]
    pairs = sum(len(c) for _, c in requests)
    make = functools.partial(CrossEncoderReranker, MODEL, backend=args.backend, device="cpu")
    rows = []

    folder = tempfile.mkdtemp(prefix="bench-ray-chroma-")
    server = chroma_server(folder)
    try:
        bi_encoder = BiEncoder()
        store = functools.partial(ChromaStore, host="localhost", port=8765, bi_encoder=bi_encoder)
        seconds = timed(lambda: store("in-process").ingest(docs, show_progress=False))
        rows.append(_row("ingest", "in-process", f"{cores} threads", len(docs), seconds, 0.0, "documents"))
        ray = start_ray(num_cpus=cores)
        for actors in (1, 2):
            fixed = timed(ingest_on_ray, docs[:actors], store(f"tiny-{actors}"), actors=actors, batch_size=1)
            job = timed(ingest_on_ray, docs, store(f"ray-{actors}"), actors=actors, batch_size=32)
            rows.append(_row("ingest", f"Ray, {actors} actor(s)", "1 each", len(docs), job, fixed, "documents"))
        here = make()
        seconds = timed(lambda: [here.rerank(q, c) for q, c in requests])
        rows.append(_row("rerank", "in-process", f"{cores} threads", pairs, seconds, 0.0, "pairs"))
        for actors in (1, 2):
            pool = RayReranker(make, actors=actors, rows_per_task=1)
            tiny = [(q, c[:2]) for q, c in requests[:actors]]
            fixed = timed(pool.rerank_many, tiny)
            job = timed(pool.rerank_many, requests)
            rows.append(_row("rerank", f"Ray, {actors} actor(s)", "1 each", pairs, job, fixed, "pairs"))
        ray.shutdown()
    finally:
        server.kill()
        shutil.rmtree(folder, ignore_errors=True)
    base = {row["work"]: row["_steady"] for row in rows if row["how"] == "in-process"}
    for row in rows:
        row["job vs in-process"] = f"{row.pop('_job') / base[row['work']]:.2f}x"
        row["steady vs in-process"] = f"{row.pop('_steady') / base[row['work']]:.2f}x"
    print(
        f"CPU: {bench_common.cpu_description()}; torch {torch.__version__}; "
        f"reranker {args.backend} on the shipped model; bi-encoder all-MiniLM-L6-v2 float32\n"
    )
    bench_common.print_table(rows)


def _row(work: str, how: str, threads: str, items: int, job: float, fixed: float, unit: str) -> dict:
    return {
        "work": work,
        "how": how,
        "torch threads": threads,
        "items": f"{items} {unit}",
        "job (s)": f"{job:.1f}",
        "fixed cost (s)": f"{fixed:.1f}",
        "job, per s": f"{items / job:.1f}",
        "steady, per s": f"{items / (job - fixed):.1f}",
        "_job": items / job,
        "_steady": items / (job - fixed),
    }


if __name__ == "__main__":
    main()
