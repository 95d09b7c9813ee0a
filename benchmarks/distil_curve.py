"""The learning curve that sizes the labelling: a cross-encoder student's agreement with the *pure* teacher
(mean Kendall tau per query, on a fixed set of held-out kept queries) against the number of training queries
and epochs, for each starting point, beside the first stage's own agreement (the bar a student must clear).

Each point trains a student from scratch on the first N of the other kept queries (sentence-transformers'
trainer, ``training.distil.fit``); nothing is saved. Prints a Markdown table and writes it as JSON.

Usage: python benchmarks/distil_curve.py [--scores FILE] [--sizes 50 100 200 350] [--held-out 96]
       [--epochs 2] [--base shipped --base bi-encoder] [--learning-rate 2e-5] [--queries-per-step 4]
       [--output runs/distil-curve.json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

from bench_common import ROOT, cpu_description

from rag_rerank.models import DEFAULT_BI_ENCODER, SHIPPED_CROSS_ENCODER
from rag_rerank.training.distil import Recipe, fit, kendall_tau
from rag_rerank.training.students import CrossEncoderStudent
from rag_rerank.training.teacher import read_rows

BASES = {"shipped": str(SHIPPED_CROSS_ENCODER), "bi-encoder": DEFAULT_BI_ENCODER}  # the latter: a fresh head


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scores", default=str(ROOT / "benchmarks/teacher-scores/query-likelihood-gemma-3-270m.jsonl.gz")
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 200, 350])
    parser.add_argument("--held-out", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--base", action="append", choices=list(BASES))
    parser.add_argument("--learning-rate", type=float, default=2e-5)
    parser.add_argument("--queries-per-step", type=int, default=4)
    parser.add_argument("--sample", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=192)
    parser.add_argument("--output", default="runs/distil-curve.json")
    args = parser.parse_args()
    _, rows = read_rows(args.scores)
    rows = sorted(rows, key=lambda row: row.key)
    random.Random(0).shuffle(rows)
    held_out, pool = rows[: args.held_out], rows[args.held_out :]
    bar = statistics.mean(kendall_tau(row.first_stage, row.teacher) for row in held_out)
    recipe = Recipe(
        epochs=args.epochs, learning_rate=args.learning_rate, sample=args.sample, max_length=args.max_length
    )
    results = []
    for base in args.base or ["shipped"]:
        for size in args.sizes:
            started = time.perf_counter()
            student = CrossEncoderStudent(BASES[base], recipe.max_length, "cpu")
            history = fit(student, pool[:size], held_out, recipe, bf16=False, show_progress=False)
            taus = [round(epoch["dev_kendall_tau"], 3) for epoch in history]
            results.append(
                {"base": base, "queries": size, "taus_by_epoch": taus, "seconds": round(time.perf_counter() - started)}
            )
            print(json.dumps(results[-1]), flush=True)
    report = {
        "cpu": cpu_description(),
        "held_out": len(held_out),
        "first_stage_tau": round(bar, 3),
        "recipe": vars(args),
        "points": results,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=1) + "\n")
    print(
        f"\n{cpu_description()}; {len(held_out)} held-out kept queries; the first stage's own tau with the teacher: {bar:.3f}"
    )
    print("| start | training queries | tau by epoch (0 = before) | seconds |\n|---|---|---|---|")
    for point in results:
        print(
            f"| {point['base']} | {point['queries']} | {' → '.join(map(str, point['taus_by_epoch']))} | {point['seconds']} |"
        )


if __name__ == "__main__":
    main()
