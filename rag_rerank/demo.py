"""The main job: a judged collection (SciFact by default) in an embedded Chroma; the first stage
and the reranked results side by side for a few real queries, then both stages measured on
the whole test split."""

from __future__ import annotations

import argparse
import re
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from rag_rerank.data import Dataset, natural_key
from rag_rerank.document import Document
from rag_rerank.models import ModelNotFoundError
from rag_rerank.retrieval.store import ChromaStore

if TYPE_CHECKING:
    from rag_rerank.evaluation.harness import EvalReport
    from rag_rerank.rerank.base import Reranker

WIDTH = 62
# The answer's prompt. RAG_PROMPT's instructions (cite as [n], say so where the sources lack the answer,
# a closing "Answer:") lead SmolLM2-135M, given a claim rather than a question as SciFact's queries are,
# to write "The answer is:" and end its turn, or a numbered list of nothing; asked what the sources say
# about the query in a few sentences, it writes sentences drawn from them and stops, where without a
# length it repeats itself to its token limit. The citations are listed under the answer.
ANSWER_PROMPT = """Read the sources, then answer.

Sources:
{context}

In two or three sentences, what do the sources say about this: {question}"""


def run_demo(args: argparse.Namespace, dataset: Dataset, store: ChromaStore) -> int:
    """``dataset``'s test queries against ``store`` (ingested here when empty or ``args.reingest``)."""
    from rag_rerank.evaluation.harness import evaluate
    from rag_rerank.evaluation.memorisation import read_trained_on
    from rag_rerank.models import resolve_model
    from rag_rerank.rerank.cross_encoder import CrossEncoderReranker

    print(
        f"data:          {Path(args.data).resolve()} ({len(dataset.corpus)} documents, {len(dataset.queries)} test queries)"
    )
    bi_encoder = store.bi_encoder
    print(f"bi-encoder:    {bi_encoder.model_name} ({bi_encoder.backend}, {bi_encoder.dtype})")
    print(f"chroma:        {args.chroma_host or Path(args.chroma_path).resolve()} (collection {args.collection!r})")
    if store.count() == 0 or args.reingest:
        started = time.perf_counter()
        ingested = store.ingest(dataset.corpus, show_progress=True)
        print(
            f"ingested {ingested.documents} documents as {ingested.chunks} chunks in {time.perf_counter() - started:.0f}s"
            + (f" ({len(ingested.empty)} empty: {', '.join(ingested.empty[:10])})" if ingested.empty else "")
        )
    else:
        print(f"collection holds {store.count()} chunks already (use --reingest to rebuild)")

    reranker: CrossEncoderReranker | None
    try:
        reranker = CrossEncoderReranker(args.cross_encoder, device=args.device)
    except ModelNotFoundError as error:
        print(f"\ncross-encoder: NOT LOADED - {error}\nShowing the first stage only.")
        reranker = None
    if reranker is not None:
        print(
            f"cross-encoder: {reranker.model_name} ({reranker.backend}, {reranker.dtype}; "
            f"reranking the hybrid top {args.fetch_k})"
        )

    print("\nlegend: [*] judged relevant in the test qrels, [ ] not judged relevant")
    query_ids = (
        [q.strip() for q in args.queries.split(",")] if args.queries else sorted(dataset.queries, key=natural_key)[:3]
    )
    for query_id in query_ids:
        if query_id not in dataset.queries:
            raise ValueError(f"{dataset.name} has no test query {query_id!r}")
        query, gains = dataset.queries[query_id], dataset.qrels.get(query_id, {})
        first = store.retrieve(query, max(args.k, args.fetch_k))
        print(f"\nquery {query_id}: {query}")
        left = _column(first[: args.k], gains)
        if reranker is None:
            print("\n".join(f"  {line}" for line in left))
            continue
        started = time.perf_counter()
        right = _column(reranker.rerank(query, first, top_n=args.k), gains)
        elapsed = time.perf_counter() - started
        print(f"  {'first stage (hybrid BM25 + dense)':<{WIDTH}} | reranked ({len(first)} pairs in {elapsed:.2f}s)")
        for a, b in zip(left, right):
            print(f"  {a:<{WIDTH}} | {b}")

    if reranker is None:
        return 0
    if args.llm != "none":
        llm_answer(args, dataset.queries[query_ids[0]], store, reranker)
    if args.no_eval:
        return 0
    print(f"\nBoth stages on all {len(dataset.queries)} test queries (reranking the top {args.fetch_k}):")
    learned = read_trained_on(resolve_model(reranker.model_name)).get(dataset.name)
    with warnings.catch_warnings(record=True) as caught:  # the demo's notes are its text, not Python warnings
        report = evaluate(
            dataset,
            store,
            {"hybrid + reranker": reranker},
            depth=args.fetch_k,
            first_stages=("hybrid",),
            training=learned,
        )
    print(f"\n{report.to_markdown()}")  # with the report's notes (the memorisation warning among them)
    for note in dict.fromkeys(str(warning.message) for warning in caught):
        if note not in report.notes:
            print(f"\nNote: {note}")
    print(f"\n{_verdict(report)}")
    if args.llm_queries > 0:
        llm_reranking(args, dataset, store, reranker)
    return 0


def llm_reranking(args: argparse.Namespace, dataset: Dataset, store: ChromaStore, reranker: Reranker) -> None:
    """The query-likelihood reranker beside the cross-encoder on the first ``--llm-queries`` test queries."""
    from rag_rerank.evaluation.harness import evaluate
    from rag_rerank.inference.llm import load_llm
    from rag_rerank.inference.llm.sources import LLMNotFoundError
    from rag_rerank.rerank.llm import QueryLikelihoodReranker

    try:
        llm = load_llm(None)  # the offline base model: query likelihood reads a base model best
    except LLMNotFoundError as error:
        print(f"\nLLM reranking: NOT LOADED - {error}")
        return
    ids = sorted(dataset.queries, key=natural_key)[: args.llm_queries]
    depth = min(args.fetch_k, 20)
    print(
        f"\nThe LLM query-likelihood reranker ({llm!r}) beside the cross-encoder, {len(ids)} test queries, top {depth}:"
    )
    report = evaluate(
        dataset.subset(ids),
        store,
        {"hybrid + reranker": reranker, "hybrid + LLM query likelihood": QueryLikelihoodReranker(llm)},
        depth=depth,
        first_stages=("hybrid",),
    )
    print(f"\n{report.to_markdown()}")
    print("A few queries decide little: `make eval-llm` measures it on every collection (docs: LLM reranking).")


def llm_answer(args: argparse.Namespace, query: str, store: ChromaStore, reranker: Reranker) -> None:
    """One answer written by the LLM from the reranked sources, with its citations (where an LLM can be had)."""
    from rag_rerank.context import pack_context
    from rag_rerank.inference.llm import load_llm
    from rag_rerank.inference.llm.sources import SMOLLM2, LLMNotFoundError

    try:
        llm = load_llm(args.llm or SMOLLM2)
    except LLMNotFoundError as error:
        print(f"\nLLM: NOT LOADED - {error}")
        return
    packed = pack_context(reranker.rerank(query, store.retrieve(query, args.fetch_k))[:3], max_tokens=1200)
    started = time.perf_counter()
    answer = tidy(llm.complete(ANSWER_PROMPT.format(context=packed.text, question=query)))
    if not usable(answer):
        answer = (
            f"(no answer: {llm.model_name} could not answer from these sources, it wrote {answer!r}; a larger "
            "LLM may: make demo LLM=NAME, a hub name, a .gguf file or an OpenAI-compatible URL)"
        )
    print(
        f"\nAnswer by {llm.model_name} from the top {len(packed.documents)} reranked sources "
        f"({time.perf_counter() - started:.1f}s):\n  {query}\n  -> {answer}"
    )
    for number, doc in zip(packed.citations, packed.documents):
        title = " ".join(str(doc.metadata.get("title") or doc.text).split())[:WIDTH]
        print(f"  [{number}] {doc.id}: {title}")


def tidy(answer: str) -> str:
    """``answer`` on one line, each sentence once (small models repeat themselves until their token
    limit), and without the unfinished sentence that limit cuts where a finished one comes before it.

    Args:
        answer: The LLM's answer.

    Returns:
        The sentences to show.
    """
    sentences = list(dict.fromkeys(re.split(r"(?<=[.!?])\s+", " ".join(answer.split()))))
    if len(sentences) > 1 and not sentences[-1].endswith((".", "!", "?")):
        sentences.pop()
    return " ".join(sentences)


def usable(answer: str) -> bool:
    """Whether ``answer`` says something: three different words at least, and not a bare preamble
    ("The answer is:") or a list of numbers, which small models write where they have no answer.

    Args:
        answer: The LLM's answer.

    Returns:
        True where it is worth showing as the answer.
    """
    words = {word.lower() for word in re.findall(r"[^\W\d_]{2,}", answer)}
    return len(words) >= 3 and not answer.rstrip().endswith(":")


def _verdict(report: EvalReport) -> str:
    """Whether the reranker changes nDCG@10 on held-out queries, and whether that is more than chance."""
    from rag_rerank.evaluation.harness import ALL

    difference = next(d for d in report.differences[ALL] if d.system == "hybrid + reranker")
    before = next(r for r in report.results if r.name == report.baseline).metrics["nDCG@10"]
    change = f"nDCG@10 on held-out queries: {before:.3f} -> {before + difference.mean:.3f}"
    interval = f"95% interval {difference.low:+.3f} to {difference.high:+.3f}, p={difference.p_value:.3f}"
    if not difference.significant:
        return f"The reranker's difference is NOT significant ({change}; {interval}): it may be chance."
    side = "improves" if difference.mean > 0 else "LOWERS"
    return f"The reranker {side} {change}, a significant difference ({interval})."


def _column(hits: list[Document], gains: dict[str, int]) -> list[str]:
    lines = []
    for rank, hit in enumerate(hits, start=1):
        mark = "*" if gains.get(str(hit.id), 0) > 0 else " "
        title = " ".join(str(hit.metadata.get("title") or hit.text).split())
        text = f"{rank}. [{mark}] {hit.id:<9} {title}"
        lines.append(text if len(text) <= WIDTH else text[: WIDTH - 1] + "…")
    return lines
