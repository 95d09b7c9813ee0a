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


def print_table(rows: list[dict[str, str]]) -> None:
    from rag_rerank.evaluation import markdown_table

    print(markdown_table(rows))
