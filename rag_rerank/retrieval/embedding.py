"""The first-stage bi-encoder: texts to normalised vectors."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from rag_rerank.cpu import slow_precision
from rag_rerank.document import refuse_single
from rag_rerank.models import DEFAULT_BI_ENCODER, load_bi_encoder
from rag_rerank.rerank.backends import padded_batches
from rag_rerank.rerank.backends.auto import choose_bi_encoder, resolve

log = logging.getLogger(__name__)


class UnsupportedModel(ValueError):
    """The model's layout is not one the OpenVINO path runs (it needs Transformer + mean/CLS pooling)."""


class BiEncoder:
    """Embeds passages and queries with a sentence-transformers model.

    Vectors are L2-normalised, so the dot product is the cosine similarity. Models that
    define query/document prompts (e5, bge, ...) get them through ``encode_query`` and
    ``encode_document``.

    ``backend="auto"`` (default) picks the fastest path that keeps retrieval for this machine
    (``rag_rerank.rerank.backends.auto.choose_bi_encoder``, logged): on a CPU, OpenVINO
    (``rag-rerank[openvino]``; Transformer + mean/CLS pooling models such as all-MiniLM-L6-v2,
    pooling outside the graph) in bfloat16 where the CPU has AVX-512 BF16 or AMX (ingest 4.0-4.4x torch
    float32 on an AMD EPYC, 2 cores; dense nDCG@10 within 0.002 on MEDLINE and Cranfield; cosine to
    the float32 vectors > 0.99); in int8 where the CPU has VNNI but no fast bfloat16 and the model's
    int8 vectors agree with float32 (checked once per model); else in float32 (the same vectors).
    ``backend="torch"`` is sentence-transformers itself; a ``dtype`` with ``backend="auto"`` means
    torch in that precision (``dtype="int8"`` is OpenVINO's only).
    """

    def __init__(
        self,
        model: str = DEFAULT_BI_ENCODER,
        *,
        device: str | None = None,
        batch_size: int = 64,
        dtype: str | None = None,
        backend: str = "auto",
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if dtype not in (None, "float32", "bfloat16", "float16", "int8"):
            raise ValueError(f"dtype must be float32, bfloat16, float16 or int8; got {dtype!r}")
        if backend not in ("auto", "torch", "openvino"):
            raise ValueError(f"backend must be 'auto', 'torch' or 'openvino'; got {backend!r}")
        if dtype == "int8" and backend != "openvino":
            raise ValueError("dtype='int8' is OpenVINO's: use backend='openvino' (or leave both to 'auto')")
        self.model_name = model
        self.batch_size = batch_size
        self.requested = (backend, dtype)  # as asked: a process on another machine resolves "auto" for itself
        self.backend, self.dtype = resolve(backend, dtype, device, choose_bi_encoder, "bi-encoder")
        self._model = load_bi_encoder(
            model, device=device, dtype="float32" if self.backend == "openvino" else self.dtype
        )
        self._openvino: _OpenVinoEncoder | None = None
        torch_on_cpu = self._model.device.type == "cpu" and self.backend != "openvino"  # OpenVINO: once compiled
        if torch_on_cpu and dtype is not None and (reason := slow_precision(self.backend, dtype)):
            warnings.warn(
                f"{reason}, so dtype={self.dtype!r} is slower than float32 here", RuntimeWarning, stacklevel=2
            )
        if self.backend == "openvino":
            try:
                self._openvino = _OpenVinoEncoder(self._model, self.dtype)
                self.dtype = self._openvino.dtype  # float32 where the CPU has no kernels for the asked one
                if backend == "auto" and self.dtype == "int8" and not _int8_agrees(self._model, self._openvino):
                    self._openvino, self.dtype = _OpenVinoEncoder(self._model, "float32"), "float32"
            except UnsupportedModel as error:
                if backend != "auto":
                    raise
                log.info("bi-encoder backend='auto': %s; torch in float32 instead", error)
                self.backend, self.dtype = "torch", "float32"
            except Exception as error:  # CacheNotWritable (it says the fix), or an export failing on a new architecture
                if backend != "auto":
                    raise
                log.warning(
                    "bi-encoder backend='auto' runs torch in float32 (slower): OpenVINO could not run %s (%s: %s); "
                    "backend='openvino' shows the whole error",
                    model,
                    type(error).__name__,
                    error,
                )
                self._openvino, self.backend, self.dtype = None, "torch", "float32"

    @property
    def dimension(self) -> int:
        return int(self._model.get_embedding_dimension() or 0)

    @property
    def max_tokens(self) -> int:
        """The most tokens (its own tokenizer's, special tokens included) the model reads."""
        return int(self._model.max_seq_length or 0)

    def fits(self, text: str) -> bool:
        """Whether the model reads ``text`` whole (longer texts lose their tail when embedded)."""
        ids = self._model.tokenizer(text, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
        return len(ids) <= self.max_tokens

    def embed_documents(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        _check_texts(texts, "passage")
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        if self._openvino is not None:
            return self._openvino.embed(texts, "document")
        return self._model.encode_document(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=show_progress,
        ).astype(np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        _check_texts([text], "query")
        if self._openvino is not None:
            return self._openvino.embed([text], "query")[0]
        return self._model.encode_query(
            [text], normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )[0].astype(np.float32)


def _check_texts(texts: Sequence[str], what: str) -> None:
    """Each text a non-blank str; ``what`` names them in the error ("document", or "query" for one)."""
    refuse_single(texts, f"{what}s")
    for i, text in enumerate(texts):
        name = what if what == "query" else f"{what} {i}"
        if not isinstance(text, str):
            raise TypeError(f"{name} is a {type(text).__name__}; expected a str")
        if not text.strip():
            raise ValueError(f"{name} is empty; there is nothing to embed")


def _int8_agrees(model: Any, int8: _OpenVinoEncoder) -> bool:
    """Whether the model's int8 graph embeds built-in texts as its float32 graph does (cosine, once
    per model: ``calibration.vectors_agree``); a model with outlier channels may not (logged)."""
    from rag_rerank.rerank.backends.calibration import COSINE_AGREEMENT, vectors_agree

    def float32(texts: list[str]) -> np.ndarray:  # built only when not read from the cache
        return _OpenVinoEncoder(model, "float32").embed(texts, "document")

    try:
        agrees, cosine = vectors_agree(float32, lambda texts: int8.embed(texts, "document"), int8.path)
    except RuntimeError as error:  # OpenVINO without int8 kernels for this CPU
        log.warning("bi-encoder int8 failed here (%s): OpenVINO float32 instead", str(error).splitlines()[-1])
        return False
    if agrees:
        log.info("bi-encoder int8 embeds as float32 does (calibration cosine %.4f)", cosine)
    else:
        log.warning(
            "bi-encoder int8 vectors differ from float32 (mean cosine %.4f < %.3f): OpenVINO float32 instead",
            cosine,
            COSINE_AGREEMENT,
        )
    return agrees


class _OpenVinoEncoder:
    """The bi-encoder's transformer in OpenVINO; prompts, truncation, pooling and normalisation as
    sentence-transformers does them, outside the graph."""

    BATCH = 16  # texts sorted by token count; 1.15x over 64 (less padding per batch)

    def __init__(self, model: Any, dtype: str):
        from rag_rerank.rerank.backends.onnx import exported_encoder
        from rag_rerank.rerank.backends.openvino import CompiledGraph

        kinds = [type(module).__name__ for module in model]
        pooling = getattr(model[1], "pooling_mode", None) if len(model) > 1 else None
        if kinds[:2] != ["Transformer", "Pooling"] or pooling not in ("mean", "cls") or len(kinds) > 3:
            raise UnsupportedModel(
                f"backend='openvino' runs Transformer + mean or CLS pooling (+ Normalize) bi-encoders; "
                f"this one is {kinds} with {pooling!r} pooling: use backend='torch'"
            )
        self.model, self.pooling = model, pooling
        self.path = exported_encoder(model[0].auto_model)
        self._graph = CompiledGraph(self.path, dtype)
        self.dtype = self._graph.dtype  # what OpenVINO runs

    def embed(self, texts: Sequence[str], kind: str) -> np.ndarray:
        prompt = (self.model.prompts or {}).get(kind) or ""
        tokenizer = self.model.tokenizer
        encoded = tokenizer([prompt + text for text in texts], truncation=True, max_length=self.model.max_seq_length)
        vectors = np.zeros((len(texts), self.model.get_embedding_dimension()), dtype=np.float32)
        for rows, batch in zip(*padded_batches(tokenizer, encoded, self.BATCH)):
            tokens = self._graph(batch)
            if self.pooling == "cls":
                pooled = tokens[:, 0]
            else:
                mask = batch["attention_mask"][..., None].astype(np.float32)
                pooled = (tokens * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
            vectors[rows] = pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        return vectors
