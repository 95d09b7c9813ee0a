"""The bi-encoder on OpenVINO: its transformer exported to ONNX and compiled for the CPU
(``openvino_graph``) in float32, bfloat16 or int8; prompts, truncation, pooling and normalisation
as sentence-transformers does them, outside the graph."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rag_rerank.inference.export import exported_encoder
from rag_rerank.inference.openvino_graph import CompiledGraph
from rag_rerank.inference.tokens import padded_batches


class UnsupportedModel(ValueError):
    """The model's layout is not one the OpenVINO path runs (it needs Transformer + mean/CLS pooling)."""


@dataclass(frozen=True)
class Parts:
    """What the OpenVINO path reads of a sentence-transformers bi-encoder: its transformer (loaded, or
    ``export.Known`` in a warm start), its tokenizer (transformers', or ``tokens.SavedTokenizer``), and
    its layout: the modules' kinds, the pooling, the prompts, the most tokens it reads, its width."""

    transformer: Any
    tokenizer: Any
    modules: tuple[str, ...]
    pooling: str | None
    max_seq_length: int
    dimension: int
    prompts: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, model: Any) -> Parts:
        """A loaded ``SentenceTransformer``'s parts."""
        return cls(
            model[0].auto_model,
            model.tokenizer,
            tuple(type(module).__name__ for module in model),
            getattr(model[1], "pooling_mode", None) if len(model) > 1 else None,
            int(model.max_seq_length or 0),
            int(model.get_embedding_dimension() or 0),
            dict(model.prompts or {}),
        )

    @classmethod
    def laid_out(cls, transformer: Any, tokenizer: Any, layout: dict[str, Any]) -> Parts:
        """Parts from a saved ``layout()``."""
        return cls(transformer, tokenizer, **{**layout, "modules": tuple(layout["modules"])})

    def layout(self) -> dict[str, Any]:
        """Everything but the transformer and tokenizer, as JSON."""
        return {
            "modules": list(self.modules),
            "pooling": self.pooling,
            "max_seq_length": self.max_seq_length,
            "dimension": self.dimension,
            "prompts": self.prompts,
        }


class OpenVinoEncoder:
    """The bi-encoder's transformer in OpenVINO; prompts, truncation, pooling and normalisation as
    sentence-transformers does them, outside the graph."""

    BATCH = 16  # texts sorted by token count; 1.15x over 64 (less padding per batch)

    def __init__(self, parts: Parts, dtype: str):
        laid_out = parts.modules[:2] == ("Transformer", "Pooling") and parts.modules[2:] in ((), ("Normalize",))
        if not laid_out or parts.pooling not in ("mean", "cls"):
            raise UnsupportedModel(
                f"backend='openvino' runs Transformer + mean or CLS pooling (+ Normalize) bi-encoders; "
                f"this one is {list(parts.modules)} with {parts.pooling!r} pooling: use backend='torch'"
            )
        self.parts = parts
        self.path = exported_encoder(parts.transformer)
        self._graph = CompiledGraph(self.path, dtype)
        self.dtype = self._graph.dtype  # what OpenVINO runs

    def embed(self, texts: Sequence[str], kind: str) -> np.ndarray:
        parts = self.parts
        prompt = parts.prompts.get(kind) or ""
        encoded = parts.tokenizer([prompt + text for text in texts], truncation=True, max_length=parts.max_seq_length)
        vectors = np.zeros((len(texts), parts.dimension), dtype=np.float32)
        for rows, batch in zip(*padded_batches(parts.tokenizer, encoded, self.BATCH)):
            tokens = self._graph(batch)
            if parts.pooling == "cls":
                pooled = tokens[:, 0]
            else:
                mask = batch["attention_mask"][..., None].astype(np.float32)
                pooled = (tokens * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
            vectors[rows] = pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        return vectors
