"""The two students a teacher's scores can train, each a sentence-transformers model trained by its own
trainer and loss: a cross-encoder (``CrossEncoderTrainer``; ``ListNetLoss`` or ``MarginMSELoss``) and the
bi-encoder (``SentenceTransformerTrainer``; ``DistillKLDivLoss`` over ``BI_ENCODER_SCALE * cosine`` or
``MarginMSELoss``). Each turns labelled queries into its loss's dataset, scores candidates (for the
agreement a trainer's evaluator measures) and saves itself."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any  # Any: sentence-transformers models (their attributes are untyped)

from rag_rerank.models import resolve_model
from rag_rerank.training.teacher import Labelled

if TYPE_CHECKING:
    import torch
    from datasets import Dataset

# The bi-encoder student's cosine similarities are multiplied by this before the softmax (as
# sentence-transformers' MultipleNegativesRankingLoss does): cosines span too little for a softmax.
BI_ENCODER_SCALE = 20.0


class TokenizerMismatch(ValueError):
    """A student's tokenizer makes token ids its model has no embedding for: the folder mixes two models."""


def check_tokenizer(tokenizer: Any, config: Any, model: str) -> None:
    """``TokenizerMismatch`` where ``tokenizer`` holds more tokens than ``config`` has embeddings for."""
    size, embeddings = len(tokenizer), getattr(config, "vocab_size", None)
    if embeddings is not None and size > embeddings:
        raise TokenizerMismatch(
            f"student {model}: its tokenizer has {size} tokens but its config (config.json) has embeddings for "
            f"{embeddings}: the tokenizer files belong to another model. Copy the tokenizer that was saved with it"
        )


def columns(rows: Sequence[Labelled], targets: Sequence[Sequence[float]]) -> Dataset:
    """``query, doc_0 .. doc_{k-1}, label`` (k teacher targets per row): the layout of the losses that
    take a fixed number of candidates (``MarginMSELoss``, ``DistillKLDivLoss``)."""
    from datasets import Dataset

    k = len(rows[0].passages)
    data: dict[str, list[Any]] = {"query": [row.query for row in rows]}
    for i in range(k):
        data[f"doc_{i}"] = [row.passages[i] for row in rows]
    data["label"] = [list(t) for t in targets]
    return Dataset.from_dict(data)


class CrossEncoderStudent:
    """A cross-encoder started from ``base_model``; its score is its logit (fused with the first stage
    only where it runs: ``CrossEncoderReranker(fusion_weight=...)``)."""

    kind = "cross-encoder"
    fixed_candidates = False  # ListNetLoss takes any number per query

    def __init__(self, base_model: str, max_length: int, device: str):
        from sentence_transformers.cross_encoder import CrossEncoder

        self.base_model, self.max_length, self.device = base_model, max_length, device
        self.model = CrossEncoder(resolve_model(base_model), num_labels=1, max_length=max_length, device=device)
        check_tokenizer(self.model.tokenizer, self.model.model.config, base_model)

    def loss(self, name: str) -> torch.nn.Module:
        """``ListNetLoss`` (``kl``: the targets come divided by the recipe's temperature) or ``MarginMSELoss``."""
        from sentence_transformers.cross_encoder import losses

        if name == "kl":
            return losses.ListNetLoss(self.model, mini_batch_size=32)
        return losses.MarginMSELoss(self.model)

    def dataset(self, rows: Sequence[Labelled], targets: Sequence[Sequence[float]], loss: str) -> Dataset:
        from datasets import Dataset

        if loss != "kl":
            return columns(rows, targets)
        docs = [list(row.passages) for row in rows]
        return Dataset.from_dict({"query": [r.query for r in rows], "docs": docs, "labels": [list(t) for t in targets]})

    def trainer(self, **kwargs: Any) -> Any:
        from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments

        return CrossEncoderTrainer(model=self.model, args=CrossEncoderTrainingArguments(**kwargs.pop("args")), **kwargs)

    def scores(self, rows: Sequence[Labelled]) -> list[list[float]]:
        """Each row's raw logits (no activation: the logits are what ``CrossEncoderReranker`` fuses)."""
        import torch

        pairs = [(row.query, passage) for row in rows for passage in row.passages]
        flat = self.model.predict(
            pairs, batch_size=32, activation_fn=torch.nn.Identity(), show_progress_bar=False, convert_to_numpy=True
        ).tolist()
        return _split(flat, rows)

    def save(self, folder: Path, config: dict[str, Any], fp16: bool) -> None:
        from rag_rerank.training.judged import _save

        self.model.model.to("cpu")
        _save(self.model, folder, config, fp16)


class BiEncoderStudent:
    """The bi-encoder (a sentence-transformers model) started from ``base_model``; its score is
    ``BI_ENCODER_SCALE * cosine(query, passage)``."""

    kind = "bi-encoder"
    fixed_candidates = True  # its losses take a column per candidate

    def __init__(self, base_model: str, max_length: int, device: str):
        from sentence_transformers import SentenceTransformer

        self.base_model, self.device = base_model, device
        self.model = SentenceTransformer(resolve_model(base_model), device=device)
        self.model.max_seq_length = min(max_length, self.model.max_seq_length or max_length)
        encoder: Any = self.model[0]  # the Transformer module
        check_tokenizer(self.model.tokenizer, encoder.auto_model.config, base_model)

    def loss(self, name: str) -> torch.nn.Module:
        """``DistillKLDivLoss`` over scaled cosines (``kl``: the targets come divided by the recipe's
        temperature) or ``MarginMSELoss``."""
        from sentence_transformers.sentence_transformer import losses
        from sentence_transformers.util import pairwise_cos_sim

        if name == "kl":
            return losses.DistillKLDivLoss(
                self.model,
                similarity_fct=pairwise_cos_sim,
                student_temperature=1 / BI_ENCODER_SCALE,
                teacher_temperature=1.0,
            )
        return losses.MarginMSELoss(self.model, similarity_fct=lambda a, b: BI_ENCODER_SCALE * pairwise_cos_sim(a, b))

    def dataset(self, rows: Sequence[Labelled], targets: Sequence[Sequence[float]], loss: str) -> Dataset:
        return columns(rows, targets)

    def trainer(self, **kwargs: Any) -> Any:
        from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

        args = SentenceTransformerTrainingArguments(**kwargs.pop("args"))
        return SentenceTransformerTrainer(model=self.model, args=args, **kwargs)

    def scores(self, rows: Sequence[Labelled]) -> list[list[float]]:
        queries = self.model.encode([row.query for row in rows], normalize_embeddings=True, show_progress_bar=False)
        passages = [passage for row in rows for passage in row.passages]
        vectors = self.model.encode(passages, normalize_embeddings=True, batch_size=32, show_progress_bar=False)
        flat, start = [], 0
        for query, row in zip(queries, rows):
            flat += (BI_ENCODER_SCALE * vectors[start : start + len(row.passages)] @ query).tolist()
            start += len(row.passages)
        return _split(flat, rows)

    def save(self, folder: Path, config: dict[str, Any], fp16: bool) -> None:
        """In float32 whatever ``fp16`` says: sentence-transformers would run float16 weights as float16,
        which on a CPU is slower, and the store's embeddings would change with it."""
        self.model.to("cpu")
        self.model.save(str(folder))


def _split(flat: list[float], rows: Sequence[Labelled]) -> list[list[float]]:
    """``flat`` (every row's candidates one after another) cut back into one list per row."""
    out, start = [], 0
    for row in rows:
        out.append(flat[start : start + len(row.passages)])
        start += len(row.passages)
    return out


Student = CrossEncoderStudent | BiEncoderStudent
STUDENTS: dict[str, type[CrossEncoderStudent | BiEncoderStudent]] = {
    "cross-encoder": CrossEncoderStudent,
    "bi-encoder": BiEncoderStudent,
}
