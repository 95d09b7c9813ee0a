"""``backend="auto"``: the fastest path that keeps rankings, decided once per machine and model, then read.

The rule (the measurements behind it: the docs' Speed page):

- a GPU: torch in bfloat16 where the GPU has it, else float16;
- a CPU that multiplies bfloat16 at least ``BFLOAT16_PAYS`` times faster than float32 (AVX-512 BF16
  or AMX, measured by ``rag_rerank.inference.cpu.matmul_speedup``, not guessed from flags): OpenVINO in
  bfloat16 where it is installed (``rag-rerank[openvino]``), else torch in bfloat16. Where ONNX
  Runtime is installed too, its int8 replaces OpenVINO's bfloat16 if it agrees with float32 and
  scores ``calibration.timing_pairs`` at least ``INT8_MUST_BE_FASTER`` times faster on this CPU;
- any other CPU (AVX-512 VNNI without BF16, AVX2): ONNX Runtime in int8 with one activation scale
  per token (``onnx-int8``), else its exact fused float32 graph; torch float32 without ONNX Runtime.

Every lossy path (bfloat16, float16, int8) is kept only where it ranks the built-in calibration
pairs as the model's float32 does, every score finite (``calibration``; measured once per CPU and
model, then read from the cache); else the exact path on the same runtime runs, and the log says
why. A path that gives a non-finite score later is replaced by torch float32 (``CrossEncoderReranker``).
``torch-int8`` is never chosen (slower than ``onnx-int8``). An explicit ``backend`` or ``dtype``
overrides the choice, unchecked.

What is decided is a ``plan`` (backend, precision, why, the measurements), saved per CPU, model and
runtime versions and read before anything is built: a warm construction builds only the engine the
plan names, and where that is a graph (ONNX Runtime's, OpenVINO's) it builds it without loading the
model (``warm_build``, from the record ``inference.warm`` keeps of the model's folder).
``RAG_RERANK_PLAN`` pins the choice (``plan.pinned``); its lossy paths are checked too.
A timing within ``TIMING_NOISE`` of its threshold is measured again, and if it stays there the path
closer to float32 runs, so machines of one class choose alike.

The bi-encoder (``choose_bi_encoder``) follows the same rule with the paths it has: OpenVINO where it
is installed, in bfloat16 where bfloat16 pays; else in int8 where int8 matmuls pay (VNNI,
``INT8_PAYS``); else in float32; torch without OpenVINO; half precision on GPUs. Its lossy paths are
kept only where their vectors of the calibration texts agree with float32's
(``calibration.vectors_agree``).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rag_rerank.inference import cpu
from rag_rerank.inference.backend import Backend, load_backend
from rag_rerank.inference.cache import CacheNotWritable
from rag_rerank.inference.calibration import (
    AGREEMENT,
    Logits,
    int8_speedup,
    int8_verdict,
    ranks_alike,
    verdict_path,
)
from rag_rerank.inference.export import build_warnings, fingerprinted
from rag_rerank.inference.optimize import prepared_graph
from rag_rerank.inference.plan import Choice, Plan, pinned, planned, saved_plan
from rag_rerank.inference.tokens import loaded_dtype
from rag_rerank.inference.warm import WarmCrossEncoder

log = logging.getLogger(__name__)

BFLOAT16_PAYS = 1.5  # the bfloat16 matmul speed-up over float32 above which bfloat16 wins end to end
INT8_PAYS = 1.5  # the same for int8 (VNNI or AMX: 2-4x; AVX2 without VNNI: 0.04-0.07x)
# int8 replaces OpenVINO's bfloat16 only this much faster: bfloat16 ranks closer to float32 (tau 0.99 vs 0.95)
INT8_MUST_BE_FASTER = 1.05
TIMING_NOISE = 0.05  # how far apart two timings of the same paths on one machine come out (relative)

__all__ = ["PATHS", "Choice", "Plan", "build", "choose", "choose_bi_encoder", "resolve", "warm_build"]

PATHS: dict[str, dict[str, tuple[str, ...]]] = {  # what a pin may name: each task's backends and their precisions
    "cross-encoder": {
        "torch": ("float32", "bfloat16", "float16"),
        "onnx": ("float32",),
        "onnx-int8": ("float32",),
        "openvino": ("float32", "bfloat16"),
    },
    "bi-encoder": {"torch": ("float32", "bfloat16", "float16"), "openvino": ("float32", "bfloat16", "int8")},
}


def resolve(backend: str, dtype: str | None, device: str | None, rule: Callable[[str], Choice], task: str) -> Choice:
    """What is asked for: an explicit backend keeps its precision (float32 unless ``dtype`` says
    otherwise); ``"auto"`` with a ``dtype`` means torch; plain ``"auto"`` takes the pin
    (``RAG_RERANK_PLAN``) for ``task``, else asks ``rule`` (``choose`` or ``choose_bi_encoder``) for
    ``device`` (default: the best available): the candidate the checks then settle (``build``)."""
    if backend != "auto":
        return Choice(backend, dtype or "float32", "asked for")
    if dtype is not None:
        return Choice("torch", dtype, "asked for (a dtype with backend='auto' means torch)")
    from rag_rerank.models import default_device

    return pinned(task, PATHS[task]) or rule(device or default_device())


def choose(device: str) -> Choice:
    """The cross-encoder's backend and precision on ``device``, by the rule in this module's docstring.

    Args:
        device: "cpu", "cuda" or "mps".

    Returns:
        The choice (backend, dtype) and why, before the checks that need the model (``build``).
    """
    if device.startswith(("cuda", "mps")):
        return _on_gpu(device)
    speedup = cpu.matmul_speedup("bfloat16")
    if speedup >= BFLOAT16_PAYS:
        why = f"this CPU multiplies bfloat16 {speedup:.1f}x faster than float32"
        if importlib.util.find_spec("openvino") is not None:
            return Choice("openvino", "bfloat16", f"{why}: OpenVINO's bfloat16 kernels")
        return Choice("torch", "bfloat16", f"{why} (pip install 'rag-rerank[openvino]' for 1.5x more)")
    if importlib.util.find_spec("onnxruntime") is not None:
        return Choice(
            "onnx-int8",
            "float32",
            f"bfloat16 does not pay on this CPU ({speedup:.2f}x): ONNX Runtime in int8, per-token scales",
        )
    return Choice(
        "torch", "float32", "ONNX Runtime is not installed (pip install 'rag-rerank[onnx]' for 2-3x): torch float32"
    )


class Engines:
    """The engines a decision may need (the candidate, float32 for reference, int8 to time), each
    built when first asked for; ``take`` hands over the one that runs and closes the rest."""

    def __init__(self, model: Any, batch_size: int | None, load: Callable[..., Any]):
        self.model, self._batch_size, self._load = model, batch_size, load
        self._models = {loaded_dtype(model): model}
        self._built: dict[tuple[str, str], Backend] = {}

    def get(self, backend: str, dtype: str) -> Backend:
        if (backend, dtype) not in self._built:
            engine = load_backend(backend, self.model_for(backend, dtype), batch_size=self._batch_size, dtype=dtype)
            # OpenVINO runs float32 where this CPU lacks the asked kernels: the same engine serves that
            self._built[backend, dtype] = self._built.setdefault((backend, engine.dtype), engine)
        return self._built[backend, dtype]

    def model_for(self, backend: str, dtype: str) -> Any:
        """The loaded model an engine runs: torch the model in ``dtype``, the graph runtimes export the float32 one."""
        wanted = dtype if backend == "torch" else loaded_dtype(self.model)
        if wanted not in self._models:
            self._models[wanted] = self._load(dtype=wanted)
        return self._models[wanted]

    def logits(self, backend: str, dtype: str) -> Logits:
        """The engine's logits, the engine built only when first called (a cached verdict needs none)."""
        return lambda pairs: self.get(backend, dtype).logits(pairs)

    def take(self, backend: str, dtype: str) -> tuple[Backend, Any]:
        """The engine that runs and its model; the others are closed."""
        engine = self.get(backend, dtype)
        self.close(but=engine)
        return engine, self.model_for(backend, dtype)

    def close(self, but: Backend | None = None) -> None:
        for engine in {id(engine): engine for engine in self._built.values()}.values():
            if engine is not but:
                engine.close()
        self._built = {key: engine for key, engine in self._built.items() if engine is but}


def build(
    candidate: Choice, model: Any, batch_size: int | None, name: str, load: Callable[..., Any], device: str
) -> tuple[Plan, Backend, Any]:
    """The plan for the loaded model ``name`` (saved, else decided: ``decide``), the one engine it
    names, and the loaded model that engine runs (``load(dtype=...)`` loads the model again where
    another precision is needed). Where the graphs are not cached and cannot be (a read-only or full
    disk), or the model cannot be exported (an architecture the exporter does not know), torch in
    float32 instead, with a warning that says why: the default reranker must not fail where plain
    torch runs."""
    engines = Engines(model, batch_size, load)
    try:
        with fingerprinted():
            plan = planned("cross-encoder", model.model, device, candidate, lambda: decide(candidate, engines, name))
            engine, runs = engines.take(plan.backend, plan.dtype)
    except Exception as error:  # noqa: BLE001 - CacheNotWritable (it says the fix), or an export failing on a new architecture
        engines.close()
        log.warning(
            "backend='auto' runs torch in float32 (slower): %s could not be built for %s (%s: %s); "
            "backend='%s' shows the whole error",
            candidate.backend,
            name,
            type(error).__name__,
            error,
            candidate.backend,
        )
        why = f"{candidate.backend} could not be built ({type(error).__name__})"
        exact = engines.model_for("torch", "float32")
        engine = load_backend("torch", exact, batch_size=batch_size)
        return Plan("cross-encoder", "torch", "float32", why, source="fallback"), engine, exact
    _log_plan(plan)
    return plan, engine, runs


GRAPHS = ("onnx", "onnx-int8", "openvino")  # the backends built from cached graphs, without the model


def warm_build(
    candidate: Choice, model: WarmCrossEncoder, batch_size: int | None, device: str
) -> tuple[Plan, Backend] | None:
    """The engine of the plan saved for a model known by its record alone (``warm``), built from its
    cached graph as ``build`` builds it from the loaded model; None where no plan is saved for it or the
    plan runs torch (then the model is loaded and ``build`` runs).

    Raises:
        ModelNeeded: the plan's graph is not cached (it is made from the loaded model).
    """
    plan = saved_plan("cross-encoder", model.model, device, candidate)
    if plan is None or plan.backend not in GRAPHS:
        return None
    stand_in: Any = model  # for the CrossEncoder whose parts the graph backends read
    engine = load_backend(plan.backend, stand_in, batch_size=batch_size, dtype=plan.dtype)
    _log_plan(plan)
    return plan, engine


def _log_plan(plan: Plan) -> None:
    log.info(
        "cross-encoder backend='auto': %s in %s (%s; %s plan %s)",
        plan.backend,
        plan.dtype,
        plan.why,
        plan.source,
        plan.path,
    )


def decide(candidate: Choice, engines: Engines, name: str) -> Plan:
    """What runs for the loaded model: the candidate where its lossy path ranks the calibration pairs
    as float32 does, every score finite (half precision: else float32 on the same runtime; int8: else
    the exact ONNX graph), and where OpenVINO's bfloat16 was chosen, ONNX Runtime's int8 instead if it
    also agrees and scores faster on this CPU (``_int8_or_bfloat16``)."""
    backend, dtype, why = candidate.backend, candidate.dtype, candidate.why
    measured: dict[str, float] = {}
    if dtype in ("bfloat16", "float16"):
        if (runs := engines.get(backend, dtype).dtype) != dtype:  # OpenVINO without this CPU's kernels
            return Plan("cross-encoder", backend, runs, f"{why}; {backend} runs {runs} on this CPU", measured)
        agrees, measured[f"{dtype}_kendall_tau"] = _agrees(
            name,
            backend,
            dtype,
            engines.logits(backend, dtype),
            engines.logits("torch", "float32"),
            verdict_path(engines.model.model, f"{backend}-{dtype}"),
            instead=f"{backend} in float32",
            forces=f"backend={backend!r}, dtype={dtype!r}",
        )
        if not agrees:
            return Plan("cross-encoder", backend, "float32", f"{why}; {dtype} ranked unlike float32", measured)
    if backend == "onnx-int8":
        if not _int8_agrees(
            engines, name, prepared_graph(engines.model.model, quantize=True), measured, "the exact ONNX graph"
        ):
            return Plan(
                "cross-encoder", "onnx", "float32", f"{why}; int8 ranked unlike float32: the exact graph", measured
            )
        return Plan("cross-encoder", backend, dtype, f"{why}; int8 ranks as float32 does", measured)
    if (
        (backend, dtype) == ("openvino", "bfloat16")
        and not candidate.pinned
        and importlib.util.find_spec("onnxruntime")
    ):
        return _int8_or_bfloat16(engines, name, why, measured)
    return Plan("cross-encoder", backend, dtype, why, measured)


def _int8_or_bfloat16(engines: Engines, name: str, why: str, measured: dict[str, float]) -> Plan:
    """OpenVINO's bfloat16 is faster than int8 on some CPUs (AMX), slower on others (AVX-512 VNNI
    and BF16 without AMX): measured once per CPU and model on ``calibration.timing_pairs``. Within
    ``TIMING_NOISE`` of ``INT8_MUST_BE_FASTER`` it is measured again, and if it stays there bfloat16
    (closer to float32) runs."""

    def plan(backend: str, because: str) -> Plan:
        return Plan(
            "cross-encoder", backend, "bfloat16" if backend == "openvino" else "float32", f"{why}; {because}", measured
        )

    try:
        graph = prepared_graph(engines.model.model, quantize=True)
    except CacheNotWritable as error:
        log.warning("OpenVINO bfloat16 kept, int8 not tried: %s", error)
        return plan("openvino", "int8 not tried (its graph cannot be cached)")
    if not _int8_agrees(engines, name, graph, measured, "OpenVINO bfloat16"):
        return plan("openvino", "int8 ranked unlike float32")
    int8, bfloat16 = engines.logits("onnx-int8", "float32"), engines.logits("openvino", "bfloat16")
    speedup = measured["int8_speedup"] = int8_speedup(int8, bfloat16, graph, "openvino-bfloat16")
    band = (INT8_MUST_BE_FASTER / (1 + TIMING_NOISE), INT8_MUST_BE_FASTER * (1 + TIMING_NOISE))
    if band[0] < speedup < band[1]:  # within noise of the threshold: once more, and both timings count
        again = int8_speedup(int8, bfloat16, graph, "openvino-bfloat16", attempt=2)
        speedup = measured["int8_speedup"] = float(np.sqrt(speedup * again))
        if band[0] < speedup < band[1]:
            log.info(
                "OpenVINO bfloat16 kept: int8 runs at %.2fx its speed, within noise of %.2fx",
                speedup,
                INT8_MUST_BE_FASTER,
            )
            return plan(
                "openvino",
                f"int8 {speedup:.2f}x its speed, within noise of {INT8_MUST_BE_FASTER}x: the path closer to float32",
            )
    if speedup < INT8_MUST_BE_FASTER:
        log.info("OpenVINO bfloat16 kept: int8 runs at %.2fx its speed on this CPU", speedup)
        return plan("openvino", f"int8 only {speedup:.2f}x its speed here")
    log.info("int8 (ONNX Runtime) instead of OpenVINO bfloat16: %.2fx its speed on this CPU", speedup)
    return plan(
        "onnx-int8", f"ONNX Runtime's int8 {speedup:.2f}x OpenVINO bfloat16's speed here, ranking as float32 does"
    )


def _int8_agrees(engines: Engines, name: str, graph: Path, measured: dict[str, float], instead: str) -> bool:
    """Whether the model's int8 graph at ``graph`` ranks the calibration pairs as its float32 does."""
    agrees, measured["int8_kendall_tau"] = _agrees(
        name,
        "onnx-int8",
        "int8",
        engines.logits("onnx-int8", "float32"),
        engines.logits("torch", "float32"),
        int8_verdict(graph),
        instead=instead,
        forces="backend='onnx-int8'",
        graph=graph,
    )
    return agrees


def _agrees(
    name: str,
    backend: str,
    dtype: str,
    lossy_logits: Logits,
    float32_logits: Logits,
    verdict: Path,
    *,
    instead: str,
    forces: str,
    graph: Path | None = None,
) -> tuple[bool, float]:
    """Whether a lossy path ranks the calibration pairs as the model's float32 does, every score
    finite (``calibration.ranks_alike``, measured once), and its Kendall tau; logged, with what runs
    ``instead`` where it does not, and what the exporters warned while building ``graph``."""
    agrees, tau = ranks_alike(float32_logits, lossy_logits, verdict)
    if agrees:
        log.info("cross-encoder %s ranks as float32 does (calibration Kendall tau %.3f)", dtype, tau)
        return agrees, tau
    warned = build_warnings(graph) if graph is not None else ""
    log.warning(
        "%s on %s in %s ranks the calibration pairs differently from float32 or gives non-finite scores "
        "(Kendall tau %.2f < %.2f): running %s instead (%s forces it)%s",
        name,
        backend,
        dtype,
        tau,
        AGREEMENT,
        instead,
        forces,
        f"; the exporters warned while building it:\n{warned}" if warned else "",
    )
    return agrees, tau


def choose_bi_encoder(device: str) -> Choice:
    """The bi-encoder's backend ("torch" or "openvino") and precision on ``device``.

    Args:
        device: "cpu", "cuda" or "mps".

    Returns:
        The choice and why, before the checks that need the model (``BiEncoder`` makes them).
    """
    if device.startswith(("cuda", "mps")):
        return _on_gpu(device)
    speedup = cpu.matmul_speedup("bfloat16")
    dtype = "bfloat16" if speedup >= BFLOAT16_PAYS else "float32"
    why = f"this CPU multiplies bfloat16 {speedup:.2f}x as fast as float32"
    if importlib.util.find_spec("openvino") is None:
        return Choice("torch", dtype, f"{why}: torch in {dtype} (pip install 'rag-rerank[openvino]' for 1.7-2.4x more)")
    if dtype == "float32" and (int8 := cpu.matmul_speedup("int8")) >= INT8_PAYS:
        why = f"{why}, int8 {int8:.2f}x (VNNI)"
        return Choice("openvino", "int8", f"{why}: OpenVINO int8 (the float32 graph where its vectors differ)")
    return Choice("openvino", dtype, f"{why}: OpenVINO in {dtype}")


def _on_gpu(device: str) -> Choice:
    if device.startswith("cuda"):
        import torch

        dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        return Choice("torch", dtype, f"a CUDA GPU: half precision ({dtype})")
    return Choice("torch", "float16", "an Apple GPU: float16")
