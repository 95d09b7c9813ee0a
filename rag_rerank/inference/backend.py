"""The contract every cross-encoder runtime fulfils, and the registry that builds one by name.

A backend turns (query, passage) pairs into one logit each (``logits``), says the precision it
runs (``dtype``) and releases what it holds (``close``). Adding one (a GPU path, another runtime)
is a module in ``inference/cross_encoder/`` and a line in ``factories``; each factory takes only
the options it uses (``batch_size``, ``compile``, ``dtype``), read from its signature.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, Protocol, get_args

import numpy as np

from rag_rerank.inference.cross_encoder import onnx, openvino, pytorch, reference  # torch, ORT, OpenVINO: when built
from rag_rerank.inference.tokens import Pairs

if TYPE_CHECKING:
    from sentence_transformers import CrossEncoder

BackendName = Literal["auto", "torch", "torch-int8", "onnx", "onnx-int8", "openvino", "sentence-transformers"]
NAMES: tuple[str, ...] = get_args(BackendName)
Dtype = Literal["float32", "bfloat16", "float16"]
DTYPES: tuple[str, ...] = get_args(Dtype)


class Backend(Protocol):
    batch_size: int
    dtype: str  # what it computes in (torch: as loaded; ONNX graphs: float32, int8 ones say so by name)

    def logits(self, pairs: Pairs) -> np.ndarray:
        """One logit per pair, in order."""
        ...

    def close(self) -> None:
        """Release threads or sessions; the backend is not used after this."""
        ...


class NonFiniteOutput(RuntimeError):
    """A backend computed NaN or infinite logits or vectors: a broken fast path (a graph compiled for
    another precision, kernels this CPU runs wrongly) or a broken model. Never passed on as scores."""


def finite(values: np.ndarray, *, backend: str, dtype: str, model: str, what: str = "logits") -> np.ndarray:
    """``values`` if every number in them is finite.

    Args:
        values: One row (or one number) per input.
        backend, dtype, model: What computed them, named in the error.
        what: What they are ("logits", "vectors").

    Returns:
        ``values`` unchanged.

    Raises:
        NonFiniteOutput: naming the backend, precision and model, and how many inputs were hit.
    """
    bad = ~np.isfinite(values)
    if not bad.any():
        return values
    hit = int(bad.reshape(len(values), -1).any(axis=1).sum())
    raise NonFiniteOutput(
        f"{model} gave NaN or infinite {what} for {hit} of {len(values)} inputs on backend={backend!r} in {dtype}; "
        "backend='torch' with dtype='float32' runs the exact path (backend='auto' falls back to it by itself)"
    )


def check(name: str, *, compile: bool = False) -> None:
    """Refuse an unknown backend, or compile=True where it does not apply (before any model loads)."""
    if name not in NAMES:
        raise ValueError(f"backend must be one of {', '.join(NAMES)}; got {name!r}")
    if compile and name not in {"auto", "torch", "torch-int8"}:
        raise ValueError(
            f"compile=True applies to backend='torch' or 'torch-int8', not {name!r} "
            "(ONNX Runtime fuses its own graph; sentence-transformers is the uncompiled reference)"
        )


def load_backend(
    name: str, model: CrossEncoder, *, batch_size: int | None = None, compile: bool = False, dtype: str = "float32"
) -> Backend:
    """The backend ``name`` over a loaded sentence-transformers cross-encoder.

    Args:
        name: One of ``NAMES`` except "auto" (``inference.auto`` resolves that).
        model: The loaded cross-encoder; the torch backends run it as loaded (in its dtype).
        batch_size: Pairs per batch (None: the backend's own).
        compile: ``torch.compile`` the torch backends.
        dtype: The precision OpenVINO compiles its float32 export for.

    Returns:
        The backend, ready to score.
    """
    check(name, compile=compile)
    factory = FACTORIES[name]
    options = {"batch_size": batch_size, "compile": compile, "dtype": dtype}
    taken = inspect.signature(factory).parameters
    return factory(model, **{key: value for key, value in options.items() if key in taken})


FACTORIES: dict[str, Callable[..., Backend]] = {
    "torch": pytorch.TorchBackend,
    "torch-int8": pytorch.int8,
    "onnx": onnx.OnnxBackend,
    "onnx-int8": onnx.int8,
    "openvino": openvino.OpenVinoBackend,
    "sentence-transformers": reference.ReferenceBackend,
}
