"""The reranker rag-rerank ships, installed as a package: ``get_model_path()`` is its folder."""

from pathlib import Path


def get_model_path() -> str:
    """The folder holding the model's weights, tokenizer and card (load it with sentence-transformers)."""
    return str(Path(__file__).resolve().parent)
