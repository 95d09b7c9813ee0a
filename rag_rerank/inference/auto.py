"""``backend="auto"``: the fastest path that keeps rankings, chosen for this machine at start.

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

The bi-encoder (``choose_bi_encoder``) follows the same rule with the paths it has: OpenVINO where it
is installed, in bfloat16 where bfloat16 pays; else in int8 where int8 matmuls pay (VNNI,
``INT8_PAYS``); else in float32; torch without OpenVINO; half precision on GPUs. Its lossy paths are
kept only where their vectors of the calibration texts agree with float32's
(``calibration.vectors_agree``).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
from rag_rerank.inference.cross_encoder.onnx import OnnxBackend
from rag_rerank.inference.optimize import prepared_graph

log = logging.getLogger(__name__)

BFLOAT16_PAYS = 1.5  # the bfloat16 matmul speed-up over float32 above which bfloat16 wins end to end
INT8_PAYS = 1.5  # the same for int8 (VNNI or AMX: 2-4x; AVX2 without VNNI: 0.04-0.07x)
# int8 replaces OpenVINO's bfloat16 only this much faster: bfloat16 ranks closer to float32 (tau 0.99 vs 0.95)
INT8_MUST_BE_FASTER = 1.05


@dataclass(frozen=True)
class Choice:
    backend: str
    dtype: str
    why: str


def resolve(
    backend: str, dtype: str | None, device: str | None, rule: Callable[[str], Choice], what: str
) -> tuple[str, str]:
    """What runs, as (backend, dtype): an explicit backend keeps its precision (float32 unless
    ``dtype`` says otherwise); ``"auto"`` with a ``dtype`` means torch; plain ``"auto"`` asks ``rule``
    (``choose`` or ``choose_bi_encoder``) for ``device`` (default: the best available) and logs it."""
    if backend != "auto":
        return backend, dtype or "float32"
    if dtype is not None:
        return "torch", dtype
    from rag_rerank.models import default_device

    choice = rule(device or default_device())
    log.info("%s backend='auto': %s in %s (%s)", what, choice.backend, choice.dtype, choice.why)
    return choice.backend, choice.dtype


def choose(device: str) -> Choice:
    """The cross-encoder's backend and precision on ``device``, by the rule in this module's docstring.

    Args:
        device: "cpu", "cuda" or "mps".

    Returns:
        The choice (backend, dtype) and why, before the checks that need the model (``settle``).
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
            f"bfloat16 does not pay on this CPU ({speedup:.2f}x): ONNX Runtime in int8, per-token scales "
            "(the exact graph instead if the model's int8 ranks differently: backends.calibration)",
        )
    return Choice(
        "torch", "float32", "ONNX Runtime is not installed (pip install 'rag-rerank[onnx]' for 2-3x): torch float32"
    )


def build(
    chosen: str, dtype: str, model: Any, batch_size: int | None, name: str, load: Callable[..., Any]
) -> tuple[str, Backend]:
    """auto's choice built for the loaded model ``name`` and settled (``settle``; ``load(dtype=...)``
    loads the model again, for a float32 reference). Where its graphs are not cached and cannot be
    (a read-only or full disk), or the model cannot be exported (an architecture the exporter does
    not know), torch in float32 instead, with a warning that says why: the default reranker must
    not fail where plain torch runs."""
    try:
        engine = load_backend(chosen, model, batch_size=batch_size, compile=False, dtype=dtype)
        return settle(chosen, dtype, model, engine, batch_size, name, load)
    except Exception as error:  # noqa: BLE001 - CacheNotWritable (it says the fix), or an export failing on a new architecture
        log.warning(
            "backend='auto' runs torch in float32 (slower): %s could not be built for %s (%s: %s); "
            "backend='%s' shows the whole error",
            chosen,
            name,
            type(error).__name__,
            error,
            chosen,
        )
    return "torch", load_backend("torch", load(dtype="float32"), batch_size=batch_size, compile=False)


def settle(
    chosen: str, dtype: str, model: Any, engine: Backend, batch_size: int | None, name: str, load: Callable[..., Any]
) -> tuple[str, Backend]:
    """What auto runs, once the model ``name`` is loaded and ``engine`` (``chosen``) built: a lossy
    path only where it ranks the calibration pairs as float32 does, every score finite (half
    precision: else float32 on the same runtime; int8: else the exact ONNX graph), and where
    OpenVINO's bfloat16 was chosen, ONNX Runtime's int8 instead if it also scores faster on this CPU.
    Returns what runs: (backend, engine)."""
    if engine.dtype in ("bfloat16", "float16") and not _half_agrees(chosen, engine, model, name, load):
        engine.close()
        exact = model if chosen == "openvino" else load(dtype="float32")
        return chosen, load_backend(chosen, exact, batch_size=batch_size, compile=False)
    if chosen == "onnx-int8" and isinstance(engine, OnnxBackend):
        chosen, engine = _exact_unless_int8_agrees(model, engine, batch_size, name)
    elif chosen == "openvino" and engine.dtype == "bfloat16" and importlib.util.find_spec("onnxruntime"):
        chosen, engine = _int8_where_faster(model, engine, batch_size, name)
    return chosen, engine


def _half_agrees(chosen: str, engine: Backend, model: Any, name: str, load: Callable[..., Any]) -> bool:
    """Whether ``engine`` (bfloat16 or float16) ranks the calibration pairs as the model's float32
    does, once per CPU and model."""
    return _agrees(
        name,
        chosen,
        engine.dtype,
        engine.logits,
        lambda: load(dtype="float32"),
        verdict_path(model.model, f"{chosen}-{engine.dtype}"),
        instead=f"{chosen} in float32",
        forces=f"backend={chosen!r}, dtype={engine.dtype!r}",
    )


def _agrees(
    name: str,
    backend: str,
    dtype: str,
    lossy_logits: Logits,
    float32_model: Callable[[], Any],
    verdict: Path,
    *,
    instead: str,
    forces: str,
) -> bool:
    """Whether a lossy path ranks the calibration pairs as the model's float32 does, every score
    finite (``calibration.ranks_alike``, measured once: ``float32_model`` is loaded only then); logged,
    with what runs ``instead`` where it does not."""

    def float32_logits(pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        return load_backend("torch", float32_model(), batch_size=None, compile=False).logits(pairs)

    agrees, tau = ranks_alike(float32_logits, lossy_logits, verdict)
    if agrees:
        log.info("cross-encoder %s ranks as float32 does (calibration Kendall tau %.3f)", dtype, tau)
    else:
        log.warning(
            "%s on %s in %s ranks the calibration pairs differently from float32 or gives non-finite scores "
            "(Kendall tau %.2f < %.2f): running %s instead (%s forces it)",
            name,
            backend,
            dtype,
            tau,
            AGREEMENT,
            instead,
            forces,
        )
    return agrees


def _exact_unless_int8_agrees(model: Any, int8: OnnxBackend, batch_size: int | None, name: str) -> tuple[str, Backend]:
    if _int8_agrees(model, int8.logits, int8.session.path, name, instead="the exact ONNX graph"):
        return "onnx-int8", int8
    int8.close()
    return "onnx", load_backend("onnx", model, batch_size=batch_size, compile=False)


def _int8_where_faster(model: Any, bfloat16: Backend, batch_size: int | None, name: str) -> tuple[str, Backend]:
    """OpenVINO's bfloat16 is faster than int8 on some CPUs (AMX), slower on others (AVX-512 VNNI
    and BF16 without AMX): measured, once per CPU and model, on ``calibration.timing_pairs``.
    The int8 session is opened only to measure or to run: cached verdicts need just the graph's path."""
    try:
        graph = prepared_graph(model.model, quantize=True)
    except CacheNotWritable as error:
        log.warning("OpenVINO bfloat16 kept, int8 not tried: %s", error)
        return "openvino", bfloat16
    opened: list[OnnxBackend] = []

    def int8() -> OnnxBackend:
        if not opened:
            opened.append(OnnxBackend(model, batch_size=batch_size, quantize=True))
        return opened[0]

    def int8_logits(pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        return int8().logits(pairs)

    agrees = _int8_agrees(model, int8_logits, graph, name, instead="OpenVINO bfloat16")
    speedup = int8_speedup(int8_logits, bfloat16.logits, graph, "openvino-bfloat16") if agrees else 0.0
    if speedup < INT8_MUST_BE_FASTER:
        if agrees:
            log.info("OpenVINO bfloat16 kept: int8 runs at %.2fx its speed on this CPU", speedup)
        for session in opened:
            session.close()
        return "openvino", bfloat16
    log.info("int8 (ONNX Runtime) instead of OpenVINO bfloat16: %.2fx its speed on this CPU", speedup)
    bfloat16.close()
    return "onnx-int8", int8()


def _int8_agrees(model: Any, int8_logits: Logits, graph: Path, name: str, instead: str) -> bool:
    """Whether the model's int8 graph at ``graph`` ranks the calibration pairs as its float32 does
    (``model`` is loaded in float32 on this path)."""
    return _agrees(
        name,
        "onnx-int8",
        "int8",
        int8_logits,
        lambda: model,
        int8_verdict(graph),
        instead=instead,
        forces="backend='onnx-int8'",
    )


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
