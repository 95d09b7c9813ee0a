"""Shared set-up for the tutorials: data paths, offline settings, and a cross-encoder.

The tutorials run offline in CI, where no pretrained cross-encoder can be downloaded.
``get_cross_encoder()`` loads, in order: ``RAG_RERANK_CROSS_ENCODER``, the model that
``make train`` writes (``models/cranfield-minilm-ce``), the hub's
``cross-encoder/ms-marco-MiniLM-L-6-v2``; and only if none is available, fine-tunes a
quick *toy* cross-encoder on a few Cranfield queries (about a minute) so the code runs.
A toy model's order is for illustration, not a quality claim.
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


def get_cross_encoder(store=None, dataset=None):
    from rag_rerank import CrossEncoderReranker, ModelNotFoundError

    for name in (
        os.environ.get("RAG_RERANK_CROSS_ENCODER"),
        str(ROOT / "models" / "cranfield-minilm-ce"),
        "cross-encoder/ms-marco-MiniLM-L-6-v2",
    ):
        if not name:
            continue
        try:
            reranker = CrossEncoderReranker(name)
            print(f"cross-encoder: {name}")
            return reranker
        except ModelNotFoundError:
            continue
    toy = WORK / "toy-cross-encoder"
    if not (toy / "config.json").exists():
        from rag_rerank.training import mine_pairs, split_queries, train_cross_encoder

        train_ids, _ = split_queries(dataset)
        pairs = mine_pairs(dataset, store, train_ids[:12], negatives_per_query=6)
        train_cross_encoder(pairs, toy, epochs=1, max_length=96, learning_rate=5e-5, show_progress=False)
    print(
        "cross-encoder: a TOY model fine-tuned for a minute on 12 Cranfield queries (no pretrained one is "
        "available offline). Set RAG_RERANK_CROSS_ENCODER or run `make train` for a real one."
    )
    return CrossEncoderReranker(str(toy))
