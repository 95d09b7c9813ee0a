"""The query-likelihood reranker's fusion weight, chosen on training queries only, then judged on
every collection's test queries (``make eval-llm``).

Each (query, document) pair's log-likelihood is computed once and kept (``--cache``), so the
weights cost nothing more and an interrupted run continues. Training queries: SciFact's train split
and Cranfield's train half; the other collections have only test queries, so none of them picks
anything. Prints nDCG@10 of the hybrid first stage and of the fusion at the chosen weight, with the
paired 95% interval and p-value, per collection, and SciFact's unseen-document claims.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from bench_common import ROOT, cpu_description, print_table

SHARED = ROOT.parent / "shared" / "data"
TRAIN = ("scifact", "cranfield")
TEST = ("scifact", "cranfield", "medline", "npl", "cacm", "adi")
WEIGHTS = [round(0.1 * i, 1) for i in range(11)]


def candidates(name: str, split: str, depth: int, limit: int | None) -> tuple[dict, dict, dict]:
    """(queries, their hybrid top ``depth``, qrels) of ``split`` (at most ``limit`` queries, in file order)."""
    from rag_rerank import BiEncoder, ChromaStore
    from rag_rerank.data import load_collection

    data = load_collection(SHARED / name, split)
    store = ChromaStore(f"llm-eval-{name}", path=str(ROOT / ".chroma"), bi_encoder=BiEncoder())
    if store.count() == 0:
        store.ingest(data.corpus, show_progress=True)
    queries = {q: t for q, t in data.queries.items() if any(g > 0 for g in data.qrels.get(q, {}).values())}
    queries = dict(list(queries.items())[:limit])
    return queries, {q: store.retrieve(text, depth) for q, text in queries.items()}, data.qrels


def run_weights(reranker, queries: dict, found: dict, qrels: dict) -> tuple[dict, dict, float]:
    """Per weight, each query's nDCG@10; the first stage's; seconds the first weight took (the scoring)."""
    from rag_rerank.document import ids_of
    from rag_rerank.evaluation.metrics import ndcg

    per_weight: dict[float, dict[str, float]] = {}
    seconds = 0.0
    for w in WEIGHTS:
        started = time.perf_counter()
        reranker.weight = w
        per_weight[w] = {q: ndcg(ids_of(reranker.rerank(text, found[q])), qrels[q]) for q, text in queries.items()}
        seconds = seconds or time.perf_counter() - started
    first = {q: ndcg(ids_of(found[q]), qrels[q]) for q in queries}
    return per_weight, first, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=None, help="the LLM (default: the offline base model)")
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--train-queries", type=int, default=100, help="per training collection")
    parser.add_argument("--test-queries", type=int, default=None, help="per test collection (default all)")
    parser.add_argument("--cache", default=str(ROOT / "runs" / "llm-scores.jsonl"))
    args = parser.parse_args()

    from rag_rerank.data import load_collection
    from rag_rerank.evaluation.memorisation import TrainingData, overlap
    from rag_rerank.evaluation.significance import compare_paired
    from rag_rerank.inference.llm import load_llm
    from rag_rerank.rerank.llm import JudgementCache, QueryLikelihoodReranker

    llm = load_llm(args.model)
    reranker = QueryLikelihoodReranker(llm, cache=JudgementCache(args.cache), timeout=None)
    print(f"{llm!r}, hybrid top {args.depth}; {cpu_description()}")

    pooled: dict[float, list[float]] = {w: [] for w in WEIGHTS}
    for name in TRAIN:
        queries, found, qrels = candidates(name, "train", args.depth, args.train_queries)
        per_weight, _, seconds = run_weights(reranker, queries, found, qrels)
        for w in WEIGHTS:
            pooled[w] += list(per_weight[w].values())
        print(f"train {name}: {len(queries)} queries, {seconds:.0f} s")
    means = {w: statistics.mean(v) for w, v in pooled.items()}
    chosen = max(WEIGHTS, key=lambda w: (means[w], -abs(w - 0.5)))
    print("training nDCG@10 by weight:", {w: round(m, 4) for w, m in means.items()}, "-> chosen", chosen)

    rows = []
    for name in TEST:
        queries, found, qrels = candidates(name, "test", args.depth, args.test_queries)
        per_weight, first, seconds = run_weights(reranker, queries, found, qrels)
        subsets = {name: list(queries)}
        if name == "scifact":
            train = TrainingData(name, load_collection(SHARED / name, "train").qrels)
            subsets[f"{name} unseen-document claims"] = [q for q in overlap(qrels, train).unseen if q in queries]
        for label, ids in subsets.items():
            diff = compare_paired(
                "fused", "hybrid", "nDCG@10", {q: per_weight[chosen][q] for q in ids}, {q: first[q] for q in ids}
            )
            rows.append(
                {
                    "collection (test)": label,
                    "queries": str(len(ids)),
                    "hybrid": f"{statistics.mean(first[q] for q in ids):.4f}",
                    f"fused w={chosen}": f"{statistics.mean(per_weight[chosen][q] for q in ids):.4f}",
                    "difference [95% CI], p": diff.label(),
                    "QLM alone": f"{statistics.mean(per_weight[1.0][q] for q in ids):.4f}",
                    "s/query": f"{seconds / max(1, len(queries)):.2f}",
                }
            )
        print(f"test {name}: {len(queries)} queries, {seconds:.0f} s")
    print_table(rows)
    Path(args.cache).parent.mkdir(parents=True, exist_ok=True)


if __name__ == "__main__":
    main()
