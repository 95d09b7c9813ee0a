"""The two students a teacher's scores can train: a cross-encoder (which, like the shipped one, corrects
the first stage: ``logit + w * -log(rank)``, ``w`` learned) and the bi-encoder (``scale * cosine``).
Each gives a score per candidate of a labelled query, with gradients, and saves itself."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any  # Any: sentence-transformers models (their attributes are untyped)

from rag_rerank.models import resolve_model
from rag_rerank.rerank.cross_encoder import first_stage_prior
from rag_rerank.training.teacher import Labelled

if TYPE_CHECKING:
    import torch

# The bi-encoder student's cosine similarities are multiplied by this before the loss (as
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


class CrossEncoderStudent:
    """A cross-encoder started from ``base_model``; its score is ``logit + w * -log(rank)``, ``w`` learned
    from the base's saved weight (0 for a model trained without one)."""

    kind = "cross-encoder"

    def __init__(self, base_model: str, max_length: int, device: str):
        import torch
        from sentence_transformers.cross_encoder import CrossEncoder

        from rag_rerank.rerank.cross_encoder import _trained_weight

        self.base_model, self.max_length, self.device = base_model, max_length, device
        self.model = CrossEncoder(resolve_model(base_model), num_labels=1, max_length=max_length, device=device)
        check_tokenizer(self.model.tokenizer, self.model.model.config, base_model)
        self.weight = torch.nn.Parameter(torch.tensor(_trained_weight(base_model), device=device))

    def parameter_groups(self, learning_rate: float) -> list[dict[str, Any]]:
        return [
            {"params": list(self.model.model.parameters()), "lr": learning_rate},
            {"params": [self.weight], "lr": 0.01, "weight_decay": 0.0},
        ]

    def network(self) -> torch.nn.Module:
        return self.model.model

    def after_step(self) -> None:
        """Keep the first-stage weight >= 0, as ``CrossEncoderReranker`` requires."""
        self.weight.data.clamp_(min=0.0)

    def scores(self, row: Labelled) -> torch.Tensor:
        import torch

        batch = self.model.tokenizer(
            [row.query] * len(row.passages),
            list(row.passages),
            truncation=True,
            max_length=self.max_length,
            padding=True,
            return_tensors="pt",
        ).to(self.device)
        logits = self.model.model(**batch).logits[:, 0].float()
        prior = torch.from_numpy(first_stage_prior(max(row.positions()) + 1)[list(row.positions())])
        prior = prior.float().to(self.device)
        return logits + self.weight * prior

    def save(self, folder: Path, recipe: dict[str, Any], fp16: bool) -> None:
        from rag_rerank.training.judged import _save

        self.model.model.to("cpu")
        _save(self.model, folder, {"first_stage_weight": self.weight.item(), **recipe}, fp16)


class BiEncoderStudent:
    """The bi-encoder (a sentence-transformers model) started from ``base_model``; its score is
    ``BI_ENCODER_SCALE * cosine(query, passage)``."""

    kind = "bi-encoder"

    def __init__(self, base_model: str, max_length: int, device: str):
        from sentence_transformers import SentenceTransformer

        self.base_model, self.device = base_model, device
        self.model = SentenceTransformer(resolve_model(base_model), device=device)
        self.model.max_seq_length = min(max_length, self.model.max_seq_length or max_length)
        encoder: Any = self.model[0]  # the Transformer module
        check_tokenizer(self.model.tokenizer, encoder.auto_model.config, base_model)

    def parameter_groups(self, learning_rate: float) -> list[dict[str, Any]]:
        return [{"params": list(self.model.parameters()), "lr": learning_rate}]

    def network(self) -> torch.nn.Module:
        return self.model

    def after_step(self) -> None:
        """Nothing to keep in bounds."""

    def scores(self, row: Labelled) -> torch.Tensor:
        import torch

        features = self.model.tokenize([row.query, *row.passages])
        tensors = {k: v.to(self.device) for k, v in features.items() if isinstance(v, torch.Tensor)}
        embeddings = self.model(tensors)["sentence_embedding"]
        embeddings = torch.nn.functional.normalize(embeddings.float(), dim=-1)
        return BI_ENCODER_SCALE * embeddings[1:] @ embeddings[0]

    def save(self, folder: Path, recipe: dict[str, Any], fp16: bool) -> None:
        """In float32 whatever ``fp16`` says: sentence-transformers would run float16 weights as float16,
        which on a CPU is slower, and the store's embeddings would change with it."""
        self.model.to("cpu")
        self.model.save(str(folder))


Student = CrossEncoderStudent | BiEncoderStudent
STUDENTS: dict[str, type[CrossEncoderStudent | BiEncoderStudent]] = {
    "cross-encoder": CrossEncoderStudent,
    "bi-encoder": BiEncoderStudent,
}
