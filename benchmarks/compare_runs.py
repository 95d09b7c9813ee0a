"""Paired differences between two `rag-rerank eval --output` folders, system by system and collection by
collection: what one bi-encoder changes against another (each embeds its own collection, so the two
cannot share one run). Both must be over the same test queries.

    python benchmarks/compare_runs.py runs/eval-distil runs/eval-distil-bi-encoder \
        --system "hybrid (weighted)" --system dense

A system is named by the start of its row name in each run ("dense" matches "dense (all-MiniLM-L6-v2)").
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rag_rerank.evaluation.significance import compare_paired


def per_query(folder: Path, system: str, metric: str) -> dict[str, float]:
    rows = json.loads((folder / "results.json").read_text())["per_query"]
    name = next((row for row in rows if row.startswith(system)), None)
    if name is None:
        raise SystemExit(f"{folder}: no system named {system!r} (systems: {', '.join(rows)})")
    return {query: scores[metric] for query, scores in rows[name].items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("baseline", type=Path, help="an eval output folder (one subfolder per collection)")
    parser.add_argument("other", type=Path, help="another, over the same queries")
    parser.add_argument("--system", action="append", default=[], help="a row name's start (repeatable)")
    parser.add_argument("--metric", default="nDCG@10")
    args = parser.parse_args()
    print(f"| collection | system | {args.metric}: {args.other.name} vs {args.baseline.name} [95% CI], p |")
    print("|---|---|---|")
    for collection in sorted(p.name for p in args.baseline.iterdir() if (p / "results.json").exists()):
        for system in args.system or ["hybrid"]:
            base = per_query(args.baseline / collection, system, args.metric)
            other = per_query(args.other / collection, system, args.metric)
            if set(base) != set(other):
                raise SystemExit(f"{collection}: the two runs are over different queries")
            diff = compare_paired(system, system, args.metric, other, base)
            print(f"| {collection} | {system} | {diff.label()} |")


if __name__ == "__main__":
    main()
