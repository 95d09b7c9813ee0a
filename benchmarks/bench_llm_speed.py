"""Pairs per second of the LLM rerankers, against transformers' plain GGUF path and the cross-encoder,
in one run (``make bench-llm``).

The same SciFact candidates (one claim's hybrid-style top ``--pairs`` abstracts, cut to 256 tokens)
scored by:

- plain: ``AutoModelForCausalLM.from_pretrained(folder, gguf_file=...)`` as transformers loads it
  (float32), the whole output layer at every position, one pair at a time: what a user writes first;
- query likelihood (the LLM's own score, unfused) and yes/no through ``TransformersLM`` (batched by
  length, output layer only where read), in float32 and bfloat16, and through ``LlamaCppLM`` on the
  GGUF file as shipped; query likelihood's Kendall tau with torch float32's order beside each;
- the shipped cross-encoder, ``auto``.

Also: the rate the transformer body's matrix multiplies reached (the output layer on the query's
positions not counted), against this CPU's measured rate for a large
matmul in the same precision (how much of the machine the LLM path uses).
"""

from __future__ import annotations

import argparse
import json
import time

from bench_common import ROOT, cpu_description, print_table

SCIFACT = ROOT.parent / "shared" / "data" / "scifact"
QUERY = "ALDH1 expression is associated with poorer prognosis for breast cancer primary tumors."


def passages(count: int) -> list[str]:
    with (SCIFACT / "corpus.jsonl").open() as rows:
        docs = [json.loads(line) for line, _ in zip(rows, range(count))]
    return [f"{d['title']} {d['text']}" for d in docs]


def timed(run, repeats: int = 2) -> float:
    """Best seconds of ``repeats`` runs, after a warm-up."""
    run()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def plain_path(source, prompts: list[str], query: str):
    """transformers' own GGUF load and forward: every position's logits, one pair at a time."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source.folder)
    model = AutoModelForCausalLM.from_pretrained(source.folder, dtype=torch.float32).eval()

    def run() -> None:
        with torch.inference_mode():
            for prompt in prompts:
                ids = tokenizer(prompt + " " + query, return_tensors="pt")
                model(**ids).logits.log_softmax(-1)

    return run


def matmul_gflops(dtype: str) -> float:
    """This CPU's rate for a 512 x 640 x 2048 matmul (a Gemma 270M layer's shape) in ``dtype``."""
    import torch

    a, b = torch.randn(512, 640).to(getattr(torch, dtype)), torch.randn(640, 2048).to(getattr(torch, dtype))
    return 2 * 512 * 640 * 2048 / timed(lambda: [torch.mm(a, b) for _ in range(20)], 3) * 20 / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=None, help="the LLM (default: the offline base model)")
    parser.add_argument("--pairs", type=int, default=16)
    args = parser.parse_args()

    from scipy.stats import kendalltau

    from rag_rerank import CrossEncoderReranker, Document
    from rag_rerank.inference.llm.llama_cpp import LlamaCppLM
    from rag_rerank.inference.llm.transformers_lm import TransformersLM
    from rag_rerank.rerank.llm import QueryLikelihoodReranker, YesNoLLMReranker

    docs = [Document(text, id=str(i)) for i, text in enumerate(passages(args.pairs))]
    rows, rates, exact = [], {}, []
    for path in ("float32", "bfloat16", "llama.cpp"):
        lm = LlamaCppLM(args.model) if path == "llama.cpp" else TransformersLM(args.model, dtype=path)
        label = f"{lm.model_name}, {'torch ' + path if path != 'llama.cpp' else f'llama.cpp {lm.dtype}'}"
        for kind, maker in (("query likelihood", QueryLikelihoodReranker), ("yes/no", YesNoLLMReranker)):
            reranker = maker(lm, timeout=None, weight=1.0) if kind == "query likelihood" else maker(lm, timeout=None)
            seconds = timed(lambda r=reranker: r.rerank(QUERY, docs))
            rates[(kind, path)] = rates[f"{kind}, {label}"] = len(docs) / seconds
            row = {"system": f"{kind}, {label}", "pairs/s": f"{len(docs) / seconds:.1f}"}
            if kind == "query likelihood":  # Kendall tau of the LLM's own order with torch float32's
                order = {d.id: d.score for d in reranker.rerank(QUERY, docs)}
                exact = exact or [order[d.id] for d in docs]
                row["tau vs float32"] = f"{kendalltau(exact, [order[d.id] for d in docs]).statistic:.3f}"
                row["x torch float32"] = f"{rates[(kind, path)] / rates[(kind, 'float32')]:.2f}x"
            rows.append(row)
        if path == "float32":
            qlm = QueryLikelihoodReranker(lm)
            prompts = [p.rstrip() for p in qlm.prompts(QUERY, qlm._documents(QUERY, docs))]
            tokens = sum(len(lm.tokens(p)) + len(lm.tokens(" " + QUERY)) for p in prompts)
            body = sum(p.numel() for n, p in lm.model.named_parameters() if "embed" not in n)
            seconds = timed(plain_path(lm.source, prompts, QUERY), 1)
            rates["plain"] = len(docs) / seconds
            rows.insert(
                0,
                {
                    "system": f"plain transformers GGUF path, {lm.model_name}, float32",
                    "pairs/s": f"{rates['plain']:.1f}",
                },
            )
        if path != "llama.cpp":
            reached = 2 * body * tokens / (len(docs) / rates[("query likelihood", path)]) / 1e9
            rows[-2]["matmul GFLOP/s reached / CPU's"] = f"{reached:.0f} / {matmul_gflops(path):.0f}"
        del lm
    cross = CrossEncoderReranker()
    seconds = timed(lambda: cross.rerank(QUERY, docs))
    name = f"cross-encoder, shipped model ({cross.backend})"
    rates[name] = len(docs) / seconds
    rows.append({"system": name, "pairs/s": f"{rates[name]:.1f}"})
    for row in rows:
        rate = rates.get(row["system"], rates["plain"])
        row["x plain path"] = f"{rate / rates['plain']:.1f}x"
        for column in ("matmul GFLOP/s reached / CPU's", "tau vs float32", "x torch float32"):
            row.setdefault(column, "")
    print(f"{args.pairs} SciFact pairs, passages cut to 256 tokens; {cpu_description()}\n")
    print_table(rows)


if __name__ == "__main__":
    main()
