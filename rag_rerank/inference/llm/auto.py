"""``load_llm``'s ``backend="auto"``: for a GGUF model on a CPU, llama.cpp on the file as shipped or torch
on its dequantised copy, as the encoders' ``auto`` decides, measured rather than guessed:

- llama.cpp runs only where it ranks the calibration pairs (log P(query | passage)) as torch float32
  does (mean Kendall tau at least ``calibration.AGREEMENT``, every score finite), and
- scores ``calibration.timing_pairs`` (a reranker's passage lengths) at least ``LLAMA_CPP_MUST_BE_FASTER``
  times as fast as the torch path ``auto`` would run (float32, or bfloat16 where that pays and agrees).

Both are measured once per model file, CPU and runtime versions, then read
(``RAG_RERANK_CACHE/verdicts/llm-<file>/``). A model that is not a GGUF file, a GPU, or a machine without
llama-cpp-python runs torch.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag_rerank.inference.cache import cache_root, measured_once
from rag_rerank.inference.calibration import AGREEMENT, agreement, pairs, timing_pairs
from rag_rerank.inference.cpu import identity
from rag_rerank.inference.llm.shared import query_likelihoods
from rag_rerank.inference.llm.sources import LLMNotFoundError, file_key, gguf_file

log = logging.getLogger(__name__)

# llama.cpp quantises activations too (further from float32 than torch's dequantised weights), and one timing
# each moves by ~10%: it must be clearly faster
LLAMA_CPP_MUST_BE_FASTER = 1.2
TIMED_PAIRS = 8  # of calibration.timing_pairs (~300 tokens: on short texts llama.cpp gains far more than on these)


@dataclass(frozen=True)
class LLMChoice:
    """What runs a local LLM here: ``backend`` ("llama.cpp" or "torch"), why, and what was measured."""

    backend: str
    why: str
    measured: dict[str, float] = field(default_factory=dict)


def choose_llm(model: str | None, device: str, *, candidates: _Candidates | None = None) -> LLMChoice:
    """The backend a local LLM runs on, by the rule in this module's docstring.

    Args:
        model: What ``load_llm`` was given (a ``.gguf`` file, an offline model's name, a folder, a hub name).
        device: "cpu", "cuda" or "mps".

    Returns:
        The choice and the measurements (kendall_tau, llama_cpp_speedup) where it was measured.
    """
    if device != "cpu":
        return LLMChoice("torch", f"{device}: torch (llama-cpp-python's build here runs on the CPU)")
    try:
        name, path = gguf_file(model)
    except LLMNotFoundError as error:  # a folder or hub name; or a missing file, which torch's load names too
        return LLMChoice("torch", f"{error}: torch")
    if importlib.util.find_spec("llama_cpp") is None:
        return LLMChoice("torch", "llama-cpp-python is not installed (pip install 'rag-rerank[local-llm]'): torch")
    candidates = candidates or _Candidates(name)
    try:
        return _measured_choice(candidates, cache_root() / "verdicts" / f"llm-{file_key(path)}")
    finally:
        candidates.close()


def saved_choice(model: str) -> LLMChoice | None:
    """``choose_llm``'s choice on this CPU where its measurements are saved, None where they are not
    (nothing is loaded or measured: what ``rag-rerank doctor`` shows)."""
    candidates = _Candidates(model, load=False)
    try:
        return choose_llm(model, "cpu", candidates=candidates)
    except _NotMeasured:
        return None


def _measured_choice(candidates: _Candidates, folder: Path) -> LLMChoice:
    versions = {name: _version(name) for name in ("llama_cpp_python", "torch", "transformers")}
    tau = _once(folder / f"llama.cpp-agreement-{identity()}.json", "kendall_tau", versions, candidates.agreement)
    measured = {"kendall_tau": tau}
    if tau < AGREEMENT:
        log.warning("llama.cpp ranks the calibration pairs unlike torch float32 (tau %.2f): torch runs", tau)
        return LLMChoice("torch", f"llama.cpp ranked the calibration pairs unlike float32 (tau {tau:.2f})", measured)
    speedup = measured["llama_cpp_speedup"] = _once(
        folder / f"llama.cpp-speedup-{identity()}.json", "speedup", versions, candidates.speedup
    )
    if speedup < LLAMA_CPP_MUST_BE_FASTER:
        return LLMChoice("torch", f"llama.cpp scored at {speedup:.2f}x torch's speed here", measured)
    why = f"llama.cpp scores {speedup:.2f}x as fast as torch here, ranking as float32 does (tau {tau:.2f})"
    return LLMChoice("llama.cpp", why, measured)


class _NotMeasured(Exception):
    """A measurement ``saved_choice`` would have had to make."""


class _Candidates:
    """The models a measurement needs, each loaded when first asked for (none where the verdicts are saved)."""

    def __init__(self, name: str, load: bool = True):
        self.name, self._load = name, load
        self._loaded: dict[str, Any] = {}

    def close(self) -> None:
        for model in self._loaded.values():
            if hasattr(model, "close"):
                model.close()
        self._loaded.clear()

    def get(self, which: str) -> Any:
        """ "llama.cpp", or a torch precision ("float32", "auto": what TransformersLM's auto runs here)."""
        from rag_rerank.inference.llm.transformers_lm import choose_dtype

        if which == "auto" and choose_dtype("auto", "cpu") == "float32":
            which = "float32"
        if not self._load:
            raise _NotMeasured(which)
        if which not in self._loaded:
            if which == "llama.cpp":
                from rag_rerank.inference.llm.llama_cpp import LlamaCppLM

                self._loaded[which] = LlamaCppLM(self.name)
            else:
                from rag_rerank.inference.llm.transformers_lm import TransformersLM

                self._loaded[which] = TransformersLM(self.name, dtype=which, device="cpu")
        return self._loaded[which]

    def agreement(self) -> float:
        """Mean Kendall tau of llama.cpp's calibration scores with torch float32's; -1 where llama.cpp
        fails on them (an architecture it lacks, memory, non-finite scores): torch runs."""
        calibration = pairs()
        exact = query_likelihoods(
            self.get("float32"), calibration
        )  # _NotMeasured, where not to measure, is raised here
        try:
            fast = query_likelihoods(self.get("llama.cpp"), calibration)
        except Exception as error:  # noqa: BLE001 - any failure of the candidate is a verdict against it
            log.warning("llama.cpp failed on the calibration pairs (%s: %s): torch runs", type(error).__name__, error)
            return -1.0
        return agreement(exact, fast)

    def speedup(self) -> float:
        """How many times faster llama.cpp scores passages of a reranker's length (``TIMED_PAIRS`` of
        ``calibration.timing_pairs``, one timing each after a warm-up) than auto's torch path."""
        timed = timing_pairs()[:TIMED_PAIRS]
        seconds = {}
        for which in ("auto", "llama.cpp"):
            llm = self.get(which)
            query_likelihoods(llm, timed[:1])  # warm-up: first-call allocations
            started = time.perf_counter()
            query_likelihoods(llm, timed)
            seconds[which] = time.perf_counter() - started
        return seconds["auto"] / seconds["llama.cpp"]


def _once(path: Path, name: str, versions: dict[str, str], measure: Callable[[], float]) -> float:
    inputs = hashlib.sha256(json.dumps([versions, pairs(), timing_pairs()]).encode()).hexdigest()[:16]
    return measured_once(path, name, measure, inputs=inputs)


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "none"
