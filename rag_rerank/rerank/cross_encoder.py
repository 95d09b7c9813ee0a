"""The second stage: a cross-encoder reads each (query, passage) pair and scores it."""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import threading
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from rag_rerank.document import Document, as_documents, mark_truncated, refuse_single
from rag_rerank.inference.auto import GRAPHS, Choice, Plan, build, choose, resolve, warm_build
from rag_rerank.inference.backend import DTYPES, BackendName, Dtype, NonFiniteOutput, finite, load_backend
from rag_rerank.inference.backend import check as check_backend
from rag_rerank.inference.cpu import slow_precision
from rag_rerank.inference.export import fingerprinted
from rag_rerank.inference.tokens import max_length_of, pair_lengths
from rag_rerank.inference.warm import (
    LoadedWhenRead,
    WarmCrossEncoder,
    cross_encoder_record,
    recall,
    remember,
    warm_cross_encoder,
)
from rag_rerank.models import (
    cross_encoder_folder,
    default_cross_encoder,
    default_device,
    load_cross_encoder,
    loaded_here,
)
from rag_rerank.rerank.base import check_passage, check_query, cut
from rag_rerank.retrieval import fusion
from rag_rerank.scores import sigmoid

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self needs Python 3.11

log = logging.getLogger(__name__)


# A model trained to correct the first stage (``rag_rerank.training.train_reranker``) keeps the
# weight of the first-stage prior it learned in this file beside its weights (``first_stage_weight``);
# a distilled student (``rag_rerank.training.distil``) keeps its share of the fused score (``fusion_weight``).
FIRST_STAGE_FILE = "rag_rerank.json"


def first_stage_prior(n: int) -> np.ndarray:
    """The first stage's opinion of ``n`` candidates given best first: -log(rank)."""
    return -np.log(np.arange(1, n + 1, dtype=np.float32))


class CrossEncoderReranker:
    """Scores and reorders candidates with a sentence-transformers cross-encoder.

    Every document given to ``rerank`` comes back, best first, with a finite score: a backend that
    computes NaN or infinite logits raises ``NonFiniteOutput`` (under ``backend="auto"`` the
    exact path, torch in float32, takes over instead, logged).

    Args:
        model: A hub name or a local folder. ``None``: ``DEFAULT_CROSS_ENCODER``, or offline, where
            that cannot be loaded, the model rag-rerank ships (logged).
        device: "cpu", "cuda" or "mps" (default: the best available).
        batch_size: Pairs per batch (``None``: the backend's own, small on CPUs).
        max_length: Tokens a pair is cut to, the longer side first (default: the model's).
        normalize: Map scores through a sigmoid to 0..1 (default: the model's raw logits).
        backend: How pairs are run (``rag_rerank.inference``): ``"auto"`` (default) picks the
            fastest path that keeps rankings on this machine, checks every lossy one against float32
            once per CPU and model, and logs its choice; ``"torch"`` is the model's forward, pairs
            tokenised once and batched by length (the same scores as ``CrossEncoder.predict``);
            ``"torch-int8"`` has int8 Linear layers (SmoothQuant, per-token activations; CPU only);
            ``"onnx"`` is ONNX Runtime's fused float32 graph; ``"onnx-int8"`` the same in int8 with
            one activation scale per token; ``"openvino"`` OpenVINO's graph, in float32 or
            ``dtype="bfloat16"``; ``"sentence-transformers"`` is ``CrossEncoder.predict`` itself.
            The docs' Speed page measures each on several CPUs.
        cache_size: Keep this many (query, passage) scores in an LRU cache (for chatbots that rerank
            the same candidates again); 0 keeps none.
        dtype: "float32", "bfloat16" or "float16", for the torch and OpenVINO backends; with
            ``backend="auto"`` it means torch in that precision. bfloat16 and int8 pay only on CPUs
            with AVX-512 BF16 / VNNI or AMX; elsewhere the reranker warns that they run slowly.
        compile: Run the torch backends through ``torch.compile`` at construction (needs a C++
            compiler on CPU); it pays most on ``"torch-int8"``.
        allow_untrained_head: Load a checkpoint without a trained relevance head (it ranks at
            random; for tests and benchmarks).
        first_stage_weight: Add ``weight * -log(rank)`` to each document's score, rank being its
            position in the list given to ``rerank`` (1 = the first stage's best). ``None`` takes
            the weight the model was trained with (``rag_rerank.json`` beside a model made by
            ``rag-rerank train``; 0 for any other model); 0 ranks by the cross-encoder alone.
            ``score`` is never fused.
        fusion_weight: Fuse the cross-encoder's logits with the first stage's scores as the
            query-likelihood LLM reranker does (``retrieval.fusion.with_first_stage``: this share
            for the min-max scaled logits, the rest for the min-max scaled ``Document.score``, or
            by position where a document has none); scores are then of kind ``fused`` (0..1, per
            query) and ``normalize`` has no effect. ``None`` takes the weight a distilled student
            was saved with (``rag_rerank.json``; else no fusion).

    Raises:
        ValueError: a setting that cannot work (unknown backend, a dtype the backend does not run,
            a model with more than one output label), named with the fix.
        ModelNotFoundError: the model cannot be found offline.
    """

    _model = LoadedWhenRead()  # the sentence-transformers model; after a warm start loaded when first read

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str | None = None,
        batch_size: int | None = None,
        max_length: int | None = None,
        normalize: bool = False,
        backend: BackendName = "auto",
        cache_size: int = 0,
        dtype: Dtype | None = None,
        compile: bool = False,
        allow_untrained_head: bool = False,
        first_stage_weight: float | None = None,
        fusion_weight: float | None = None,
    ):
        _check_options(batch_size, backend, dtype, compile, cache_size)
        auto_or_torch = "torch" if compile and backend == "auto" else backend  # compile means torch, as a dtype does
        candidate = resolve(auto_or_torch, dtype, device, choose, "cross-encoder")
        chosen, precision = candidate.backend, candidate.dtype
        if precision != "float32" and chosen not in {"torch", "sentence-transformers", "openvino"}:
            raise ValueError(
                f"dtype={dtype!r} applies to the torch and openvino backends; backend={chosen!r} runs its own "
                "precision (onnx: float32, *-int8: int8). Use backend='torch' or 'openvino' with a lower dtype, "
                "or drop dtype."
            )
        self.model_name = model = model or default_cross_encoder()
        self.cache_size, self.normalize, self.compiled = cache_size, normalize, compile
        self._cache: OrderedDict[bytes, float] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._fallback_lock = threading.Lock()
        # auto as the user left it (no dtype): then its lossy picks are checked, and a backend giving
        # non-finite logits is replaced by the exact one; an explicit dtype is what runs
        self._auto = auto_or_torch == "auto" and dtype is None
        self._load = functools.partial(
            load_cross_encoder, model, device=device, max_length=max_length, allow_untrained_head=allow_untrained_head
        )
        self._loaded: Any = None  # the sentence-transformers model (``_model``): after a warm start, loaded when needed
        self._warm: WarmCrossEncoder | None = None  # stands in for it after a warm start
        folder = cross_encoder_folder(model, allow_untrained_head)
        # a warm start, and its record, only for weights as the files hold them: not where this process
        # loaded them already (and may have changed them in memory since)
        warm_options, fresh = {"max_length": max_length}, self._auto and not loaded_here(folder)
        if not (fresh and self._warm_start(candidate, folder, warm_options, device, batch_size)):
            with fingerprinted():  # the weights hashed once for the plan, the graphs and the record
                self._full_start(candidate, device, batch_size, compile)
                if fresh and self.plan.backend in GRAPHS:  # the next process starts warm
                    remember("cross-encoder", folder, warm_options, cross_encoder_record(self._model))
        self.dtype = self._engine.dtype  # what runs: OpenVINO runs float32 where the CPU lacks the asked kernels
        self.backend = self.plan.backend  # what runs: "auto" resolved
        self.batch_size = self._engine.batch_size
        self.first_stage_weight, self.fusion_weight = _first_stage_weights(model, first_stage_weight, fusion_weight)
        if normalize and self.fusion_weight is not None:
            warnings.warn(
                f"normalize=True does not apply to {model}: its rerank scores are fused with the first stage "
                f"(fusion_weight={self.fusion_weight}, 0..1 per query, kind 'fused'); score() still gives "
                "probabilities. Pass fusion_weight=... to change the share",
                UserWarning,
                stacklevel=2,
            )

    def _warm_start(
        self, candidate: Choice, folder: str, options: dict[str, Any], device: str | None, batch_size: int | None
    ) -> bool:
        """The engine of the plan saved for this model and CPU, built from the model's record and cached
        graph without loading the model (``inference.warm``); False where anything it needs is not
        saved, or the plan runs torch: then the model is loaded (``_full_start``), as it would be anyway."""
        where = device or default_device()
        record = recall("cross-encoder", folder, options) if where == "cpu" else None
        if record is None:
            return False
        try:
            warm = warm_cross_encoder(record)
            built = warm_build(candidate, warm, batch_size, where)
        except Exception as error:  # noqa: BLE001 - ModelNeeded (a graph not cached); anything else the full path meets and handles itself
            log.info("%s: no warm start (%s: %s); loading the model", self.model_name, type(error).__name__, error)
            return False
        if built is None:
            return False
        self.plan, self._engine = built
        self._warm = warm
        return True

    def _full_start(self, candidate: Choice, device: str | None, batch_size: int | None, compile: bool) -> None:
        """The model loaded, and under auto the plan saved for it (else decided now) and the one engine it names."""
        chosen, precision = candidate.backend, candidate.dtype
        # OpenVINO compiles the float32 model for its precision itself
        self._model = self._load(dtype="float32" if chosen == "openvino" else precision)
        if self._model.num_labels != 1:
            raise ValueError(
                f"{self.model_name!r} has {self._model.num_labels} output labels; a reranker needs a one-logit "
                "relevance model (e.g. cross-encoder/ms-marco-MiniLM-L-6-v2)"
            )
        self._warn_if_slow(chosen, precision)
        if compile:
            log.info("compiling %s (%s) with torch.compile: 30-80 s, once", self.model_name, chosen)
        #: What runs and why (``inference.plan.Plan``): under auto the saved or measured plan, else what was asked for.
        self.plan = Plan("cross-encoder", chosen, precision, candidate.why, source="asked for")
        if self._auto:  # the plan saved for this model and machine, else decided now: then only its engine is built
            where = device or str(self._model.device)
            self.plan, self._engine, self._model = build(
                candidate, self._model, batch_size, self.model_name, self._load, where
            )
        else:
            self._engine = load_backend(chosen, self._model, batch_size=batch_size, compile=compile, dtype=precision)

    @property
    def _reads(self) -> Any:
        """What tokens and lengths are read from: the warm start's stand-in, else the model (the same tokens)."""
        return self._warm if self._warm is not None else self._model

    def _warn_if_slow(self, chosen: str, precision: str) -> None:
        """A torch fast path this CPU runs slower than float32 (OpenVINO's is checked once compiled)."""
        if self._model.device.type == "cpu" and chosen != "openvino" and (reason := slow_precision(chosen, precision)):
            warnings.warn(
                f"{reason}, so this fast path is slower than float32 here. Use backend='onnx-int8' (fast int8 "
                "on AVX2 too) or backend='torch' in float32.",
                RuntimeWarning,
                stacklevel=4,
            )

    @property
    def max_length(self) -> int:
        return max_length_of(self._reads)

    def close(self) -> None:
        """Release the backend (the ONNX backends' worker threads); the reranker is not used after this."""
        self._engine.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def pair_lengths(self, pairs: Sequence[tuple[str, str]]) -> list[int]:
        """Each (query, passage) pair's length in the model's tokens, before truncation."""
        return pair_lengths(self._reads.tokenizer, pairs) if pairs else []

    def truncated(self, pairs: Sequence[tuple[str, str]]) -> list[bool]:
        """For each (query, passage) pair: is it longer than the model reads (so it gets cut)?"""
        return [n > self.max_length for n in self.pair_lengths(pairs)]

    def _flag_truncated(self, docs: list[Document], pairs: list[tuple[str, str]]) -> list[Document]:
        """Mark the documents whose pair with the query was longer than the model reads."""
        cut_ids = {i for i, cut in enumerate(self.truncated(pairs)) if cut}
        if cut_ids:
            log.info(
                "%d of %d passages were longer than the %d tokens %s reads: cut, and marked in their "
                "metadata (truncated_by)",
                len(cut_ids),
                len(docs),
                self.max_length,
                self.model_name,
            )
        return [mark_truncated(doc, "cross-encoder") if i in cut_ids else doc for i, doc in enumerate(docs)]

    def token_count(self, text: str) -> int:
        """How many of the model's own tokens ``text`` is (special tokens not counted)."""
        return len(self._reads.tokenizer(text, add_special_tokens=False)["input_ids"])

    def clip(self, text: str, max_tokens: int) -> str:
        """``text`` cut after its first ``max_tokens`` tokens (the model's own), on a token boundary."""
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
        offsets = self._reads.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        return text if len(offsets) <= max_tokens else text[: offsets[max_tokens - 1][1]]

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        """One score per passage, in the order given.

        Args:
            query: The question or search text.
            passages: The texts to score.

        Returns:
            One score per passage (a logit, or 0..1 with ``normalize=True``).
        """
        check_query(query)
        refuse_single(passages, "passages")
        for i, passage in enumerate(passages):
            check_passage(passage, f"passage {i}")
        return self._score([(query, passage) for passage in passages])

    def score_pairs(self, pairs: Sequence[tuple[str, str]], *, logits: bool = False) -> list[float]:
        """One score per (query, passage) pair, in the order given; the queries may differ.

        Lets a server batch several requests into one pass over the model. ``logits=True``
        gives the raw logits even when ``normalize=True`` (for callers that map them themselves).
        """
        for i, pair in enumerate(pairs):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise TypeError(f"pair {i} must be a (query, passage) tuple")
            check_query(pair[0])
            check_passage(pair[1], f"pair {i}: passage")
        if logits:
            return self._cached_logits([(q, p) for q, p in pairs]) if pairs else []
        return self._score([(q, p) for q, p in pairs])

    def _score(self, pairs: list[tuple[str, str]]) -> list[float]:
        if not pairs:
            return []
        scores = self._cached_logits(pairs)
        return [sigmoid(x) for x in scores] if self.normalize else scores

    def _cached_logits(self, pairs: list[tuple[str, str]]) -> list[float]:
        if not self.cache_size:
            return [float(x) for x in self._logits(pairs)]
        keys = [_pair_key(query, passage) for query, passage in pairs]
        with self._cache_lock:  # threads share the cache (the adapters' async paths, the server)
            known = {key: self._cache[key] for key in keys if key in self._cache}
            for key in known:
                self._cache.move_to_end(key)
        missing = {key: pair for key, pair in zip(keys, pairs) if key not in known}  # each pair once
        if missing:  # scored outside the lock, so threads do not wait on each other's model passes
            known.update(zip(missing, (float(x) for x in self._logits(list(missing.values())))))
            with self._cache_lock:
                for key in missing:
                    self._cache[key] = known[key]
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return [known[key] for key in keys]

    def _logits(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        """The engine's logits, every one finite: else ``NonFiniteOutput``, or under ``backend="auto"``
        the exact path (torch, float32) from then on, logged."""
        engine, backend, dtype = self._engine, self.backend, self.dtype
        try:
            return finite(engine.logits(pairs), backend=backend, dtype=dtype, model=self.model_name)
        except NonFiniteOutput as error:
            if not self._auto or (backend, dtype) == ("torch", "float32"):
                raise
            log.warning("%s: backend='auto' runs torch in float32 from now on", error)
        with self._fallback_lock:
            if self._engine is engine:  # not already replaced by another thread
                self._model = self._load(dtype="float32")
                self._engine = load_backend("torch", self._model, batch_size=None, compile=False)
                self.backend, self.dtype, self.batch_size = "torch", "float32", self._engine.batch_size
                self.plan = Plan(
                    "cross-encoder", "torch", "float32", f"{backend} gave non-finite logits", source="fallback"
                )
            engine = self._engine
        return finite(engine.logits(pairs), backend="torch", dtype="float32", model=self.model_name)

    def with_first_stage(
        self, logits: Sequence[float], first_stage: Sequence[float | None] | None = None
    ) -> np.ndarray:
        """``logits`` of candidates in first-stage order, fused with that order as the model asks:
        plus ``first_stage_weight * -log(rank)``, or (``fusion_weight``) with ``first_stage``'s
        scores (``None``: by position). The score fusion ``rerank`` applies (and a server that
        batches logits itself)."""
        scores = np.asarray(logits, dtype=np.float64)
        if self.fusion_weight is not None:
            first = [None] * len(scores) if first_stage is None else list(first_stage)
            return np.asarray(fusion.with_first_stage(scores.tolist(), first, self.fusion_weight), dtype=np.float64)
        if self.first_stage_weight and len(scores):
            scores = scores + self.first_stage_weight * first_stage_prior(len(scores))
        return scores

    def rerank(
        self,
        query: str,
        documents: Sequence[Document | str],
        top_n: int | None = None,
        threshold: float | None = None,
    ) -> list[Document]:
        """Every document with its score, best first (ties keep their input order).

        Args:
            query: The question or search text.
            documents: The candidates (``Document`` or plain strings), in first-stage order, best
                first, when ``first_stage_weight`` is not 0: the score is then the cross-encoder's
                plus the weighted prior of that order.
            top_n: Keep only the best n (default: all).
            threshold: Drop documents scoring below it (default: none).

        Returns:
            The documents, metadata kept, each with ``score`` and ``score_kind`` ("logit",
            "probability", or "fused" with a ``fusion_weight``: 0..1 per query, so a threshold means
            little there); passages the model read only in part are marked (``truncated_by``).

        Raises:
            TypeError, ValueError: a query or passage that is not a non-blank, valid str, named.
            NonFiniteOutput: the backend gave NaN or infinite logits (not under ``backend="auto"``).
        """
        cut([], top_n)  # validate before scoring
        docs = as_documents(documents)
        check_query(query)
        for i, doc in enumerate(docs):
            check_passage(doc.text, f"passage {i}")
        pairs = [(query, doc.text) for doc in docs]
        scores = self.with_first_stage(self._cached_logits(pairs) if docs else [], [doc.score for doc in docs])
        docs = self._flag_truncated(docs, pairs)
        fused = self.fusion_weight is not None
        if self.normalize and not fused:
            scores = np.array([sigmoid(x) for x in scores])
        kind = "fused" if fused else "probability" if self.normalize else "logit"
        ranked = [doc.with_score(score, kind) for doc, score in sorted(zip(docs, scores), key=lambda pair: -pair[1])]
        return cut(ranked, top_n, threshold)


def _check_options(batch_size: int | None, backend: str, dtype: str | None, compile: bool, cache_size: int) -> None:
    """Refuse bad settings by name, before any model loads."""
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer or None (automatic), got {batch_size!r}")
    check_backend(backend, compile=compile)
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
    if cache_size < 0:
        raise ValueError(f"cache_size must be >= 0, got {cache_size}")


def _first_stage_weights(model: str, prior: float | None, fused: float | None) -> tuple[float, float | None]:
    """(the first-stage prior's weight, the fusion weight or None): as asked, else as saved beside the model."""
    saved = _saved_weights(model) if prior is None and fused is None else {}
    prior = float(saved.get("first_stage_weight", 0.0) if prior is None else prior)
    fused = saved.get("fusion_weight") if fused is None else fused
    if not math.isfinite(prior) or prior < 0:
        raise ValueError(f"first_stage_weight must be a finite number >= 0, got {prior!r}")
    if fused is not None and not 0.0 <= float(fused) <= 1.0:
        raise ValueError(f"fusion_weight must be between 0 and 1, got {fused!r}")
    if fused is not None and prior:
        raise ValueError("give first_stage_weight or fusion_weight, not both: they are two ways of fusing one order")
    return prior, None if fused is None else float(fused)


def _saved_weights(model: str) -> dict[str, float]:
    """The weights saved beside a model trained by ``train_reranker`` or ``distil`` (``FIRST_STAGE_FILE``)."""
    import json
    from pathlib import Path

    from rag_rerank.models import resolve_model

    path = Path(resolve_model(model)) / FIRST_STAGE_FILE
    saved = json.loads(path.read_text()) if path.exists() else {}
    return {k: saved[k] for k in ("first_stage_weight", "fusion_weight") if saved.get(k) is not None}


def _pair_key(query: str, passage: str) -> bytes:
    return hashlib.blake2b(f"{query}\x00{passage}".encode(), digest_size=16).digest()
