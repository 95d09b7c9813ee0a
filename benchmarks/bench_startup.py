"""How long the default reranker takes to start, before and after a change, in one run.

For this tree and a ``--before`` one (a git ref checked out into a temporary worktree), each in fresh
processes on the same machine:

- cold: the first construction of ``CrossEncoderReranker()`` and its first score with an empty cache
  (matmul probe, export, fusion, quantisation, calibration, timing), imports included, wall time, and
  where it goes (a second cold run under cProfile: each step's cumulative seconds; nested steps count
  in each);
- warm: the same with everything cached, imports included (median of ``--repeats`` processes), the
  part of it spent loading the weights, and which of sentence-transformers, scikit-learn, transformers
  and torch it imported;
- query: ``rag-rerank query`` end to end, warm, on SciFact (5,183 documents, ingested once into
  ``--chroma-path``), the process started and torn down as a user's shell does.

Usage: python benchmarks/bench_startup.py [--before REF|none] [--chroma-path DIR] [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_common import ROOT, cpu_description, print_table

BEFORE = (
    "69b1db6"  # main before the warm start (the issue "a warm process reaches its first score without importing ...")
)
QUERY = "ALDH1 expression is associated with poorer prognosis for breast cancer primary tumors."
HEAVY = ("sentence_transformers", "sklearn", "transformers", "torch")  # what a warm start should not import
STEPS = {  # function name -> step (cumulative, from cProfile)
    "matmul_speedup": "probe bfloat16 / int8 matmuls",
    "load_cross_encoder": "load the weights",
    "fingerprint": "hash the weights",
    "_export": "export to ONNX",
    "_fuse": "fuse the ONNX graph",
    "quantize_per_token": "quantise to int8",
    "ranks_alike": "check a lossy path against float32",
    "int8_speedup": "time int8 against bfloat16",
    "compile_model": "compile OpenVINO's graph",
    "_create_inference_session": "open ONNX Runtime sessions",
}

CONSTRUCT = """
import time
started = time.perf_counter()  # imports count: a warm process is judged by when it first scores
import cProfile, json, pstats, sys
profile = cProfile.Profile() if sys.argv[1] == "profile" else None
if profile:
    profile.enable()
from rag_rerank.rerank import cross_encoder
loading = []
real_load = cross_encoder.load_cross_encoder
def timed_load(*args, **kwargs):
    began = time.perf_counter()
    try:
        return real_load(*args, **kwargs)
    finally:
        loading.append(time.perf_counter() - began)
cross_encoder.load_cross_encoder = timed_load
reranker = cross_encoder.CrossEncoderReranker()
reranker.score(sys.argv[3], ["ALDH1 marks breast cancer stem cells and predicts poor outcome."])
if profile:
    profile.disable()
total = time.perf_counter() - started
steps = {}
if profile:
    for (path, line, name), (_, _, _, cumulative, _) in pstats.Stats(profile).stats.items():
        if name in json.loads(sys.argv[2]):
            steps[name] = steps.get(name, 0.0) + cumulative
heavy = [name for name in json.loads(sys.argv[4]) if name in sys.modules]
print(json.dumps({"total": total, "weights": sum(loading), "backend": reranker.backend, "steps": steps, "heavy": heavy}))
"""


def in_tree(tree: Path, cache: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """A fresh Python process importing rag_rerank from ``tree``, with ``cache`` as its cache."""
    env = {**os.environ, "PYTHONPATH": str(tree), "RAG_RERANK_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, *argv], env=env, check=False, capture_output=True, text=True, cwd=tree)
    if done.returncode:
        raise SystemExit(f"{' '.join(argv[:3])} failed in {tree}:\n{done.stderr[-3000:]}")
    return done


def construction(tree: Path, cache: Path, profiled: bool = False) -> dict:
    mode = "profile" if profiled else "plain"
    done = in_tree(tree, cache, "-c", CONSTRUCT, mode, json.dumps(list(STEPS)), QUERY, json.dumps(HEAVY))
    return json.loads(done.stdout.strip().splitlines()[-1])


def query_seconds(tree: Path, cache: Path, chroma: Path) -> float:
    started = time.perf_counter()
    argv = ["-m", "rag_rerank.cli", "query", QUERY, "--chroma-path", str(chroma), "--collection", "scifact"]
    in_tree(tree, cache, *argv)
    return time.perf_counter() - started


def ingested(chroma: Path) -> None:
    """SciFact in ``chroma`` (kept: ingest takes minutes; both trees read the same store)."""
    from rag_rerank import BiEncoder, ChromaStore
    from rag_rerank.data import load_collection

    store = ChromaStore("scifact", path=str(chroma), bi_encoder=BiEncoder())
    if store.count() == 0:
        data = load_collection(str(ROOT.parent / "shared" / "data" / "scifact"), "test", 0.5, 0)
        print(f"ingesting SciFact ({len(data.corpus)} documents) into {chroma}, once")
        store.ingest(data.corpus, show_progress=False)


def measured(tree: Path, chroma: Path, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as cold, tempfile.TemporaryDirectory() as profiled:
        first = construction(tree, Path(cold))
        steps = construction(tree, Path(profiled), profiled=True)["steps"]
        warm = [construction(tree, Path(cold)) for _ in range(repeats)]
        query_seconds(tree, Path(cold), chroma)  # the bi-encoder's graph and the store's files warmed
        queries = [query_seconds(tree, Path(cold), chroma) for _ in range(repeats)]
    return {
        "backend": first["backend"],
        "cold": first["total"],
        "steps": steps,
        "warm": statistics.median(run["total"] for run in warm),
        "weights": statistics.median(run["weights"] for run in warm),
        "heavy": warm[-1]["heavy"],
        "query": statistics.median(queries),
    }


def worktree(ref: str) -> Path | None:
    folder = Path(tempfile.mkdtemp(prefix="rag-rerank-before-"))
    done = subprocess.run(
        ["git", "worktree", "add", "--detach", str(folder), ref], cwd=ROOT, check=False, capture_output=True
    )
    return folder if done.returncode == 0 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--before", default=BEFORE, help=f"the git ref to compare with (default {BEFORE}; none: this tree only)"
    )
    parser.add_argument("--chroma-path", default=None, help="a Chroma folder for SciFact (default: a new one)")
    parser.add_argument("--repeats", type=int, default=3, help="warm processes per measurement (median)")
    args = parser.parse_args()
    chroma = Path(args.chroma_path or tempfile.mkdtemp(prefix="rag-rerank-scifact-"))
    ingested(chroma)
    before = worktree(args.before) if args.before != "none" else None
    trees = {"after": ROOT, **({f"before ({args.before})": before} if before else {})}
    if before is None and args.before != "none":
        print(f"{args.before} cannot be checked out here (a shallow clone?): after only")
    try:
        results = {name: measured(tree, chroma, args.repeats) for name, tree in trees.items()}
    finally:
        if before is not None:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(before)], cwd=ROOT, check=False, capture_output=True
            )
    print(f"\nStart-up of the default reranker, {cpu_description()}, {args.repeats} warm processes each (median)")
    rows = [
        ("backend auto runs", lambda r: r["backend"]),
        ("cold construction and first score, imports included, s", lambda r: f"{r['cold']:.1f}"),
        ("warm construction and first score, imports included, s", lambda r: f"{r['warm']:.2f}"),
        ("of which loading the weights, s", lambda r: f"{r['weights']:.2f}"),
        ("warm, imports " + " / ".join(HEAVY), lambda r: " / ".join("yes" if m in r["heavy"] else "no" for m in HEAVY)),
        ("warm `rag-rerank query` on SciFact, s", lambda r: f"{r['query']:.2f}"),
    ]
    rows += [
        (f"cold: {step} (cProfile), s", lambda r, name=name: f"{r['steps'].get(name, 0):.1f}")
        for name, step in STEPS.items()
    ]
    print_table([{"": label, **{name: shown(result) for name, result in results.items()}} for label, shown in rows])
    if len(results) == 2:
        after, old = results["after"], next(r for name, r in results.items() if name != "after")
        print(
            f"\nafter / before: warm construction {old['warm'] / after['warm']:.1f}x faster, "
            f"warm query {old['query'] / after['query']:.1f}x, cold {old['cold'] / after['cold']:.1f}x"
        )


if __name__ == "__main__":
    main()
