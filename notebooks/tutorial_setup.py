"""Shared set-up for the tutorials: data paths, offline settings, and the reranker.

The tutorials run offline in CI, where the hub's cross-encoder cannot be downloaded.
``get_cross_encoder()`` loads ``RAG_RERANK_CROSS_ENCODER`` when set, else the library's
default: ``cross-encoder/ms-marco-MiniLM-L-6-v2`` where it can be had, otherwise the
reranker rag-rerank ships in ``models/`` (trained with ``make model``; see its model card).
"""

from __future__ import annotations

import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED = Path(os.environ.get("RAG_RERANK_SHARED_DATA", ROOT.parent / "shared" / "data"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(SHARED / "tiktoken_cache"))
CRANFIELD = Path(os.environ.get("RAG_RERANK_CRANFIELD", SHARED / "cranfield"))
WORK = HERE / ".work"  # scratch space for the tutorials' Chroma stores and models (git-ignored)


def get_cross_encoder():
    from rag_rerank import CrossEncoderReranker

    reranker = CrossEncoderReranker(os.environ.get("RAG_RERANK_CROSS_ENCODER") or None)
    print(f"cross-encoder: {reranker.model_name}")
    return reranker
