"""The first-stage bi-encoder: texts to normalised vectors."""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from rag_rerank.document import check_text, refuse_single
from rag_rerank.inference.auto import Choice, Plan, choose_bi_encoder, resolve
from rag_rerank.inference.backend import NonFiniteOutput, finite
from rag_rerank.inference.calibration import COSINE_AGREEMENT, vectors_agree, verdict_path
from rag_rerank.inference.cpu import slow_precision
from rag_rerank.inference.embedder.openvino import OpenVinoEncoder, Parts, UnsupportedModel
from rag_rerank.inference.export import fingerprinted
from rag_rerank.inference.warm import LoadedWhenRead, bi_encoder_record, recall, remember, warm_bi_encoder
from rag_rerank.models import DEFAULT_BI_ENCODER, load_bi_encoder, loaded_here, resolve_model

log = logging.getLogger(__name__)


BiEncoderBackend = Literal["auto", "torch", "openvino"]
BiEncoderDtype = Literal["float32", "bfloat16", "float16", "int8"]


class BiEncoder:
    """Embeds passages and queries with a sentence-transformers model.

    Vectors are L2-normalised, so the dot product is the cosine similarity. Models that define
    query/document prompts (e5, bge, ...) get them through ``embed_query`` and ``embed_documents``.
    Every vector returned is finite (``NonFiniteOutput`` otherwise; under ``backend="auto"`` torch
    in float32 takes over instead, logged).

    Args:
        model: A hub name or a local folder (default all-MiniLM-L6-v2, bundled offline).
        device: "cpu", "cuda" or "mps" (default: the best available).
        batch_size: Texts per batch on the torch path.
        dtype: "float32", "bfloat16", "float16" or (OpenVINO only) "int8". With ``backend="auto"``
            it means torch in that precision.
        backend: ``"auto"`` (default) picks the fastest path that keeps retrieval on this machine
            (``rag_rerank.inference.auto.choose_bi_encoder``, logged): on a CPU, OpenVINO
            (``rag-rerank[openvino]``; Transformer + mean/CLS pooling models, pooling outside the
            graph) in bfloat16 where the CPU has AVX-512 BF16 or AMX, in int8 where it has VNNI but
            no fast bfloat16, else in float32; a lossy path only where its vectors of built-in texts
            agree with float32's (checked once per CPU and model). ``"torch"`` is
            sentence-transformers itself; ``"openvino"`` asks for OpenVINO by name.

    Raises:
        ValueError: a setting that cannot work, named with the fix.
        UnsupportedModel: ``backend="openvino"`` for a model layout its path does not run.
    """

    _model = LoadedWhenRead()  # the sentence-transformers model; after a warm start loaded when first read

    def __init__(
        self,
        model: str = DEFAULT_BI_ENCODER,
        *,
        device: str | None = None,
        batch_size: int = 64,
        dtype: BiEncoderDtype | None = None,
        backend: BiEncoderBackend = "auto",
    ):
        _check_options(batch_size, dtype, backend)
        self.model_name = model
        self.batch_size = batch_size
        self.requested: tuple[BiEncoderBackend, BiEncoderDtype | None] = (
            backend,
            dtype,
        )  # as asked: a process on another machine resolves "auto" for itself
        self._auto = backend == "auto" and dtype is None  # auto checks (and falls back from) only its own picks
        self._load = functools.partial(load_bi_encoder, model, device=device)
        candidate = resolve(backend, dtype, device, choose_bi_encoder, "bi-encoder")
        self.backend, self.dtype, self._why = candidate.backend, candidate.dtype, candidate.why
        self._loaded: Any = None  # the sentence-transformers model (``_model``): after a warm start, loaded when needed
        self._warm: Parts | None = None  # what a warm start read of it instead
        self._openvino: OpenVinoEncoder | None = None
        folder = resolve_model(model)
        # a warm start, and its record, only for weights as the files hold them: not where this process
        # loaded them already (and may have changed them in memory since)
        fresh = self.backend == "openvino" and not loaded_here(folder)
        with fingerprinted():  # the weights hashed once for the graph, the verdicts and the record
            if not (fresh and self._warm_start(folder)):
                self._full_start(candidate, dtype)
                if fresh and self._openvino is not None:  # the next process starts warm
                    remember("bi-encoder", folder, {}, bi_encoder_record(self._openvino.parts))
        if self._auto:
            log.info("bi-encoder backend='auto': %s in %s (%s)", self.backend, self.dtype, self._why)

    def _warm_start(self, folder: str) -> bool:
        """OpenVINO's graph opened from the model's record and cached export without loading the model
        (``inference.warm``); False where anything it needs is not saved: then the model is loaded
        (``_full_start``), as it would be anyway."""
        record = recall("bi-encoder", folder, {})
        if record is None:
            return False
        try:
            warm = warm_bi_encoder(record)
            self._openvino, why = self._openvino_encoder(warm)
        except Exception as error:  # noqa: BLE001 - ModelNeeded (the export not cached); anything else the full path meets and handles itself
            log.info("%s: no warm start (%s: %s); loading the model", self.model_name, type(error).__name__, error)
            return False
        self._warm, self.dtype, self._why = warm, self._openvino.dtype, self._why + why
        return True

    def _full_start(self, candidate: Choice, dtype: BiEncoderDtype | None) -> None:
        """The model loaded, and the path asked for opened: OpenVINO's graph (``_open_openvino``), or
        torch, under auto in half precision only where it embeds as float32 does."""
        self._model = self._load(dtype="float32" if self.backend == "openvino" else self.dtype)
        torch_on_cpu = self._model.device.type == "cpu" and self.backend != "openvino"  # OpenVINO: once compiled
        if torch_on_cpu and dtype is not None and (reason := slow_precision(self.backend, dtype)):
            warnings.warn(
                f"{reason}, so dtype={self.dtype!r} is slower than float32 here", RuntimeWarning, stacklevel=3
            )
        if self.backend == "openvino":
            self._open_openvino()
        elif self._auto and self.dtype != "float32" and not self._torch_half_agrees():
            self._model, self.dtype = self._load(dtype="float32"), "float32"
            self._why += f"; {candidate.dtype} embeds unlike float32"

    @property
    def plan(self) -> Plan:
        """What runs and why (``inference.plan.Plan``; the checks behind it are kept as verdicts)."""
        source = "measured" if self._auto else "asked for"
        return Plan("bi-encoder", self.backend, self.dtype, self._why, source=source)

    def _open_openvino(self) -> None:
        """The OpenVINO graph of the loaded model (``_openvino_encoder``); under auto torch in float32
        where OpenVINO cannot run the model (logged)."""
        try:
            self._openvino, why = self._openvino_encoder(Parts.of(self._model))
            # float32 where the CPU lacks the asked kernels
            self.dtype, self._why = self._openvino.dtype, self._why + why
        except UnsupportedModel as error:
            if not self._auto:
                raise
            log.info("bi-encoder backend='auto': %s; torch in float32 instead", error)
            self.backend, self.dtype, self._why = "torch", "float32", f"OpenVINO cannot run it ({error})"
        except Exception as error:  # CacheNotWritable (it says the fix), or an export failing on a new architecture
            if not self._auto:
                raise
            log.warning(
                "bi-encoder backend='auto' runs torch in float32 (slower): OpenVINO could not run %s (%s: %s); "
                "backend='openvino' shows the whole error",
                self.model_name,
                type(error).__name__,
                error,
            )
            self.backend, self.dtype, self._why = (
                "torch",
                "float32",
                f"OpenVINO could not be built ({type(error).__name__})",
            )

    def _openvino_encoder(self, parts: Parts) -> tuple[OpenVinoEncoder, str]:
        """The OpenVINO graph in ``self.dtype``; under auto a lossy one only where its vectors agree with
        float32's, else float32's, with why (to add to ``_why``)."""
        encoder = OpenVinoEncoder(parts, self.dtype)
        if self._auto and encoder.dtype != "float32" and not _openvino_agrees(parts, encoder):
            return OpenVinoEncoder(parts, "float32"), f"; {self.dtype} embeds unlike float32"
        return encoder, ""

    def _torch_half_agrees(self) -> bool:
        """Whether torch in this half precision embeds the calibration texts as float32 does (once per CPU and model)."""
        verdict = verdict_path(self._model[0].auto_model, f"bi-encoder-torch-{self.dtype}")
        return _agrees(
            lambda texts: _torch_vectors(self._load(dtype="float32"), texts, "document", self.batch_size),
            lambda texts: _torch_vectors(self._model, texts, "document", self.batch_size),
            verdict,
            f"torch {self.dtype}",
        )

    @property
    def dimension(self) -> int:
        return self._warm.dimension if self._warm is not None else int(self._model.get_embedding_dimension() or 0)

    @property
    def max_tokens(self) -> int:
        """The most tokens (its own tokenizer's, special tokens included) the model reads."""
        return self._warm.max_seq_length if self._warm is not None else int(self._model.max_seq_length or 0)

    def fits(self, text: str) -> bool:
        """Whether the model reads ``text`` whole (longer texts lose their tail when embedded)."""
        tokenizer = (self._warm or self._model).tokenizer  # the warm start's reads as the model's does
        ids = tokenizer(text, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
        return len(ids) <= self.max_tokens

    def embed_documents(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        """One normalised vector per text, in order (the model's document prompt, if it has one).

        Raises:
            NonFiniteOutput: the path gave NaN or infinite numbers (under ``backend="auto"``,
                torch in float32 is tried first).
        """
        _check_texts(texts, "passage")
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return self._embed(list(texts), "document", show_progress)

    def embed_query(self, text: str) -> np.ndarray:
        """The normalised vector of one query (the model's query prompt, if it has one)."""
        _check_texts([text], "query")
        return self._embed([text], "query", False)[0]

    def _embed(self, texts: list[str], kind: str, show_progress: bool) -> np.ndarray:
        """Vectors, every number finite: else ``NonFiniteOutput``, or under auto torch float32 from then on."""
        openvino, backend, dtype = self._openvino, self.backend, self.dtype
        vectors = (
            openvino.embed(texts, kind)
            if openvino is not None
            else _torch_vectors(self._model, texts, kind, self.batch_size, show_progress)
        )
        try:
            return finite(vectors, backend=backend, dtype=dtype, model=self.model_name, what="vectors")
        except NonFiniteOutput as error:
            if not self._auto or (backend, dtype) == ("torch", "float32"):
                raise
            log.warning("%s: backend='auto' runs torch in float32 from now on", error)
        self._model, self._openvino, self.backend, self.dtype = self._load(dtype="float32"), None, "torch", "float32"
        self._why = f"{backend} in {dtype} gave non-finite vectors"
        return self._embed(texts, kind, show_progress)


def _torch_vectors(model: Any, texts: list[str], kind: str, batch_size: int, show_progress: bool = False) -> np.ndarray:
    """sentence-transformers' own normalised vectors for ``texts`` as ``kind`` ("document" or "query")."""
    encode = model.encode_document if kind == "document" else model.encode_query
    vectors = encode(
        texts,
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=show_progress,
    )
    return np.asarray(vectors, dtype=np.float32)


def _check_options(batch_size: int, dtype: str | None, backend: str) -> None:
    """Refuse bad settings by name, before any model loads."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if dtype is not None and dtype not in get_args(BiEncoderDtype):
        raise ValueError(f"dtype must be one of {', '.join(get_args(BiEncoderDtype))}; got {dtype!r}")
    if backend not in get_args(BiEncoderBackend):
        raise ValueError(f"backend must be one of {', '.join(get_args(BiEncoderBackend))}; got {backend!r}")
    if dtype == "int8" and backend != "openvino":
        raise ValueError("dtype='int8' is OpenVINO's: use backend='openvino' (or leave both to 'auto')")


def _check_texts(texts: Sequence[str], what: str) -> None:
    """Each text a non-blank str; ``what`` names them in the error ("document", or "query" for one)."""
    refuse_single(texts, f"{what}s")
    for i, text in enumerate(texts):
        check_text(text, what if what == "query" else f"{what} {i}", "there is nothing to embed")


def _openvino_agrees(parts: Parts, lossy: OpenVinoEncoder) -> bool:
    """Whether the model's lossy OpenVINO graph (int8, bfloat16) embeds built-in texts as its float32
    graph does (``calibration.vectors_agree``, once per CPU and model); a model with outlier
    channels may not, and kernels a CPU runs wrongly give NaN (logged)."""

    def float32(texts: list[str]) -> np.ndarray:  # built only when not read from the cache
        return OpenVinoEncoder(parts, "float32").embed(texts, "document")

    def vectors(texts: list[str]) -> np.ndarray:
        try:
            return lossy.embed(texts, "document")
        except RuntimeError as error:  # OpenVINO without kernels for this CPU: never agrees
            log.warning("bi-encoder %s failed here (%s)", lossy.dtype, str(error).splitlines()[-1])
            return np.full((len(texts), 1), np.nan, dtype=np.float32)

    verdict = verdict_path(parts.transformer, f"bi-encoder-openvino-{lossy.dtype}")
    return _agrees(float32, vectors, verdict, f"OpenVINO {lossy.dtype}")


def _agrees(
    float32: Callable[[list[str]], np.ndarray], lossy: Callable[[list[str]], np.ndarray], verdict: Path, what: str
) -> bool:
    agrees, cosine = vectors_agree(float32, lossy, verdict)
    if agrees:
        log.info("bi-encoder %s embeds as float32 does (calibration cosine %.4f)", what, cosine)
    else:
        log.warning(
            "bi-encoder %s vectors differ from float32 or are not finite (mean cosine %.4f < %.3f): float32 instead",
            what,
            cosine,
            COSINE_AGREEMENT,
        )
    return agrees
