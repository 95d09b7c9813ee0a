"""What the benchmark scripts share: offline settings, data paths, the default model, tables."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CRANFIELD = ROOT.parent / "shared" / "data" / "cranfield"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(ROOT.parent / "shared" / "data" / "tiktoken_cache"))


def model_or_fresh_head(model: str | None) -> str:
    """``model``, or MiniLM-L6 weights with a fresh one-logit head: the real cost of a MiniLM
    cross-encoder, but meaningless rankings."""
    if model is not None:
        return model
    import torch
    from sentence_transformers import CrossEncoder

    from rag_rerank import resolve_model

    torch.manual_seed(0)
    folder = str(ROOT / "runs" / "bench-minilm-fresh-head")
    CrossEncoder(resolve_model("sentence-transformers/all-MiniLM-L6-v2"), num_labels=1).save(folder)
    return folder


def percentile(values: list[float], share: float) -> float:
    """The value at ``share`` (0.95: p95) of ``values`` sorted, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def print_table(rows: list[dict[str, str]]) -> None:
    from rag_rerank.evaluation.harness import markdown_table

    print(markdown_table(rows))


def cpu_description() -> str:
    """This machine's CPU, as every speed figure must name it (``rag_rerank.inference.cpu.describe``),
    and the CPU ``emulate_cpu.py`` runs as, where it does."""
    from rag_rerank.inference.cpu import describe

    emulated = os.environ.get("RAG_RERANK_EMULATED_CPU")  # set by emulate_cpu.py
    return f"{describe()}; run as {emulated}" if emulated else describe()


def ingested(bi_encoder, corpus, name: str):
    """A fresh embedded Chroma holding ``corpus``, and the seconds its ingest took (after one warm-up
    embedding, so the first-call set-up is not counted)."""
    import tempfile
    import time

    from rag_rerank import ChromaStore

    bi_encoder.embed_documents(["warm up text"] * 4)
    store = ChromaStore(name, path=tempfile.mkdtemp(), bi_encoder=bi_encoder)
    started = time.time()
    store.ingest(corpus, show_progress=False)
    return store, time.time() - started
