"""``backend="auto"``: the fastest path that keeps rankings, chosen for this machine at start.

The rule comes from same-run measurements on the shipped model (README, Speed), pairs/s against
``CrossEncoder.predict`` with nDCG@10 against float32:

- a GPU: torch in bfloat16 where the GPU has it, else float16;
- a CPU that multiplies bfloat16 at least 1.5x faster than float32 (AVX-512 BF16 or AMX, measured
  by ``rag_rerank.cpu.matmul_speedup``, not guessed from flags): OpenVINO in bfloat16 where it is
  installed (``rag-rerank[openvino]``; ~5x on an AVX-512 BF16 EPYC, Kendall tau 0.99), else torch
  in bfloat16 (3.4-3.5x, Kendall tau 0.99, nDCG@10 within 0.002 on Cranfield);
- any other CPU (AVX-512 VNNI without BF16, AVX2): ONNX Runtime in int8 with one activation scale
  per token (``onnx-int8``: ~1.3x the exact graph on AVX2, ~1.6x with VNNI; Kendall tau ~0.95 against
  float32 and nDCG@10 within 0.003 on the collections measured), provided the model's int8 ranks the
  built-in calibration pairs as its float32 does (``calibration``, checked once per model), else ONNX
  Runtime's exact fused float32 graph; torch float32 when ONNX Runtime is not installed
  (``pip install 'rag-rerank[onnx]'``).

Where bfloat16 pays, int8 is not chosen: OpenVINO's bfloat16 is faster and closer to float32.
``torch-int8`` is never chosen (slower than ``onnx-int8``). An explicit ``backend`` or ``dtype``
overrides the choice.

The bi-encoder (``choose_bi_encoder``) follows the same rule with the paths it has: OpenVINO where it
is installed, in bfloat16 where bfloat16 pays (ingest 3.9x torch float32 on an AVX-512 BF16 EPYC,
dense nDCG@10 within 0.002 on MEDLINE and Cranfield), else in float32 (the same vectors; 2.4x there);
torch without OpenVINO; half precision on GPUs.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

BFLOAT16_PAYS = 1.5  # the bfloat16 matmul speed-up over float32 above which bfloat16 wins end to end


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
    speedup = _bfloat16_speedup()
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


def choose_bi_encoder(device: str) -> Choice:
    """The bi-encoder's backend ("torch" or "openvino") and precision on ``device``."""
    if device.startswith(("cuda", "mps")):
        return _on_gpu(device)
    speedup = _bfloat16_speedup()
    dtype = "bfloat16" if speedup >= BFLOAT16_PAYS else "float32"
    why = f"this CPU multiplies bfloat16 {speedup:.2f}x as fast as float32"
    if importlib.util.find_spec("openvino") is not None:
        return Choice("openvino", dtype, f"{why}: OpenVINO in {dtype}")
    return Choice("torch", dtype, f"{why}: torch in {dtype} (pip install 'rag-rerank[openvino]' for 1.7-2.4x more)")


def _on_gpu(device: str) -> Choice:
    if device.startswith("cuda"):
        import torch

        dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        return Choice("torch", dtype, f"a CUDA GPU: half precision ({dtype})")
    return Choice("torch", "float16", "an Apple GPU: float16")


def _bfloat16_speedup() -> float:
    from rag_rerank.cpu import matmul_speedup

    return matmul_speedup("bfloat16")
