"""``backend="auto"``: the fastest path that keeps rankings, chosen for this machine at start.

The rule comes from same-run measurements on the shipped model (README, Speed), pairs/s against
``CrossEncoder.predict`` with nDCG@10 against float32:

- a GPU: torch in bfloat16 where the GPU has it, else float16;
- a CPU that multiplies bfloat16 at least 1.5x faster than float32 (AVX-512 BF16 or AMX, measured
  by ``rag_rerank.cpu.matmul_speedup``, not guessed from flags): OpenVINO in bfloat16 where it is
  installed (``rag-rerank[openvino]``; 5.8x on an AVX-512 BF16 EPYC, Kendall tau 0.99), else torch
  in bfloat16 (3.4-3.9x, Kendall tau 0.99, nDCG@10 within 0.002 on Cranfield). Where ONNX Runtime
  is installed too, its int8 (below) replaces OpenVINO's bfloat16 if it agrees with float32 and
  scores ``calibration.timing_pairs`` at least 1.05x faster on this CPU: measured once per CPU and
  model (that EPYC, AVX-512 VNNI without AMX: int8 6.4x against bfloat16's 5.8x);
- any other CPU (AVX-512 VNNI without BF16, AVX2): ONNX Runtime in int8 with one activation scale
  per token (``onnx-int8``: ~1.5x the exact graph on AVX2, ~2x with VNNI; Kendall tau ~0.95 against
  float32 and nDCG@10 within 0.003 on the collections measured), provided the model's int8 ranks the
  built-in calibration pairs as its float32 does (``calibration``, checked once per model), else ONNX
  Runtime's exact fused float32 graph; torch float32 when ONNX Runtime is not installed
  (``pip install 'rag-rerank[onnx]'``).

``torch-int8`` is never chosen (slower than ``onnx-int8``). An explicit ``backend`` or ``dtype``
overrides the choice.

The bi-encoder (``choose_bi_encoder``) follows the same rule with the paths it has: OpenVINO where it
is installed, in bfloat16 where bfloat16 pays (ingest 4.0-4.4x torch float32 on an AVX-512 BF16 EPYC,
dense nDCG@10 within 0.002 on MEDLINE and Cranfield); else in int8 where int8 matmuls pay (VNNI,
``INT8_PAYS``; weights and activations in groups of 32 channels, ~3.7x torch float32, dense nDCG@10
within 0.003) if the model's int8 vectors agree with its float32 ones on built-in texts (mean cosine
>= 0.998, ``calibration.vectors_agree``, once per model); else in float32 (the same vectors; 2.7x
with AVX-512, 1.6x on AVX2, where no path reaches more at those vectors: README);
torch without OpenVINO; half precision on GPUs.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rag_rerank import cpu
from rag_rerank.rerank.backends import Backend, load_backend
from rag_rerank.rerank.backends.calibration import AGREEMENT, Logits, int8_agrees, int8_speedup
from rag_rerank.rerank.backends.graph_cache import CacheNotWritable
from rag_rerank.rerank.backends.onnx import OnnxBackend, prepared_graph

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
    """The cross-encoder's backend and precision on ``device`` ("cpu", "cuda", "mps")."""
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


def build(chosen: str, dtype: str, model: Any, batch_size: int | None, name: str) -> tuple[str, Backend]:
    """auto's choice built for the loaded model ``name`` and settled (``settle``). Where its graphs
    are not cached and cannot be (a read-only or full disk), or the model cannot be exported (an
    architecture the exporter does not know), torch in float32 instead, with a warning that says
    why: the default reranker must not fail where plain torch runs."""
    try:
        engine = load_backend(chosen, model, batch_size=batch_size, compile=False, dtype=dtype)
        return settle(chosen, dtype, model, engine, batch_size, name)
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
    return "torch", load_backend("torch", model, batch_size=batch_size, compile=False)


def settle(
    chosen: str, dtype: str, model: Any, engine: Backend, batch_size: int | None, name: str
) -> tuple[str, Backend]:
    """What auto runs, once the model ``name`` is loaded and ``engine`` (``chosen``) built:
    int8 only where the model's int8 ranks as its float32 does (else the exact ONNX graph), and where
    OpenVINO's bfloat16 was chosen, ONNX Runtime's int8 instead if it also scores faster on this CPU.
    Returns what runs: (backend, engine)."""
    if chosen == "onnx-int8" and isinstance(engine, OnnxBackend):
        chosen, engine = _exact_unless_int8_agrees(model, engine, batch_size, name)
    elif chosen == "openvino" and dtype == "bfloat16" and importlib.util.find_spec("onnxruntime"):
        chosen, engine = _int8_where_faster(model, engine, batch_size, name)
    return chosen, engine


def _exact_unless_int8_agrees(model: Any, int8: OnnxBackend, batch_size: int | None, name: str) -> tuple[str, Backend]:
    if _int8_agrees(model, int8.logits, int8.session.path, name, instead="the exact ONNX graph"):
        return "onnx-int8", int8
    int8.close()
    return "onnx", load_backend("onnx", model, batch_size=batch_size, compile=False)


def _int8_where_faster(model: Any, bfloat16: Backend, batch_size: int | None, name: str) -> tuple[str, Backend]:
    """OpenVINO's bfloat16 is faster than int8 on some CPUs (AMX), slower on others (AVX-512 VNNI
    and BF16 without AMX: ~0.9x): measured, once per CPU and model, on ``calibration.timing_pairs``.
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
    """Whether the model's int8 graph at ``graph`` ranks the calibration pairs as its float32 does (logged)."""

    def float32_logits(pairs: Sequence[tuple[str, str]]) -> np.ndarray:  # built only when not read from the cache
        return load_backend("torch", model, batch_size=None, compile=False).logits(pairs)

    agrees, tau = int8_agrees(float32_logits, int8_logits, graph)
    if agrees:
        log.info("cross-encoder int8 ranks as float32 does (calibration Kendall tau %.3f)", tau)
    else:
        log.warning(
            "%s in int8 ranks the calibration pairs differently from float32 (Kendall tau %.2f < %.2f): "
            "running %s instead (backend='onnx-int8' forces int8)",
            name,
            tau,
            AGREEMENT,
            instead,
        )
    return agrees


def choose_bi_encoder(device: str) -> Choice:
    """The bi-encoder's backend ("torch" or "openvino") and precision on ``device``."""
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
