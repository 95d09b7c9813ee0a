"""The second stage: a cross-encoder reads each (query, passage) pair and scores it."""

from __future__ import annotations

import math
from collections.abc import Sequence

from rag_rerank.document import Document, as_document
from rag_rerank.models import DEFAULT_CROSS_ENCODER, load_cross_encoder


class CrossEncoderReranker:
    """Scores and reorders candidates with a sentence-transformers cross-encoder.

    Scores are the model's raw logits (higher is more relevant; their scale depends on
    the model) unless ``normalize=True``, which maps them through a sigmoid to 0..1.
    Pairs longer than ``max_length`` tokens are truncated, the longer side first.
    """

    def __init__(
        self,
        model: str = DEFAULT_CROSS_ENCODER,
        *,
        device: str | None = None,
        batch_size: int = 32,
        max_length: int | None = None,
        normalize: bool = False,
        allow_untrained_head: bool = False,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.model_name = model
        self.batch_size = batch_size
        self.normalize = normalize
        self._model = load_cross_encoder(
            model, device=device, max_length=max_length, allow_untrained_head=allow_untrained_head
        )
        if self._model.num_labels != 1:
            raise ValueError(
                f"{model!r} has {self._model.num_labels} output labels; a reranker needs a one-logit "
                "relevance model (e.g. cross-encoder/ms-marco-MiniLM-L-6-v2)"
            )

    @property
    def max_length(self) -> int:
        return int(self._model.max_length)

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        """One score per passage, in the order given."""
        _check_query(query)
        for i, passage in enumerate(passages):
            if not isinstance(passage, str):
                raise TypeError(f"passage {i} is a {type(passage).__name__}; expected a str")
            if not passage.strip():
                raise ValueError(f"passage {i} is empty; a reranker cannot score an empty passage")
        if not passages:
            return []
        import torch

        logits = self._model.predict(
            [(query, passage) for passage in passages],
            batch_size=self.batch_size,
            activation_fn=torch.nn.Identity(),
            show_progress_bar=False,
        )
        scores = [float(x) for x in logits]
        return [_sigmoid(x) for x in scores] if self.normalize else scores

    def rerank(
        self,
        query: str,
        documents: Sequence[Document | str],
        top_n: int | None = None,
        threshold: float | None = None,
    ) -> list[Document]:
        """Every document with its score, best first (ties keep their input order).

        ``top_n`` keeps only the best n; ``threshold`` drops documents scoring below it.
        Without either, exactly the input documents come back. Metadata is kept.
        """
        if top_n is not None and (not isinstance(top_n, int) or top_n < 0):
            raise ValueError(f"top_n must be a non-negative integer or None, got {top_n!r}")
        docs = [as_document(item, i) for i, item in enumerate(documents)]
        scores = self.score(query, [doc.text for doc in docs])
        ranked = sorted(
            (doc.with_score(score) for doc, score in zip(docs, scores)), key=lambda doc: -doc.score
        )
        if threshold is not None:
            ranked = [doc for doc in ranked if doc.score >= threshold]
        return ranked if top_n is None else ranked[:top_n]


def _check_query(query: str) -> None:
    if not isinstance(query, str):
        raise TypeError(f"query is a {type(query).__name__}; expected a str")
    if not query.strip():
        raise ValueError("query is empty; a reranker needs a question or search text")


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))
