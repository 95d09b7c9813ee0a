"""A warm start: an encoder's engine built from what was saved the one time its model was loaded, without
loading it again (no sentence-transformers, transformers, scikit-learn or torch to import).

The full path, having loaded a model folder, saves a record of it (``remember``): the fingerprint its
weights hashed to (``export.fingerprint``, which keys its plan, graphs and verdicts), its tokenizer
(``tokens.tokenizer_record``) and what the encoder read of the model (a cross-encoder's length, a
bi-encoder's modules, pooling and prompts). The record is keyed by the folder and every file in it
(name, size, modification time), the options it was loaded with and the versions of the libraries
that load it: a file changed, added or removed, or another transformers, misses it, and the full path
runs (and saves a new record). Records live under ``RAG_RERANK_CACHE/models``. A process that has
loaded the model already (and may have changed its weights in memory) neither starts warm nor saves
a record: the loaded weights say what it computes.

A warm start stands in for the model with what the engines read of it (``WarmCrossEncoder``,
``embedder.openvino.Parts``), its transformer an ``export.Known``: where anything is missing (a graph
not cached), that raises ``export.ModelNeeded`` and the encoder loads the model and takes the full path.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag_rerank.inference.cache import CacheNotWritable, cache_root, made_folder, written_whole
from rag_rerank.inference.embedder.openvino import Parts
from rag_rerank.inference.export import EXPORT_FORMAT, Known, fingerprint
from rag_rerank.inference.tokens import SavedTokenizer, max_length_of, tokenizer_record

log = logging.getLogger(__name__)

RECORD_FORMAT = 1  # part of the key: records written by another rule are not read
LOADERS = ("transformers", "sentence-transformers", "tokenizers")  # their versions decide what a load gives


class LoadedWhenRead:
    """An encoder's ``_model``: the sentence-transformers model, which after a warm start is loaded by
    the encoder's ``_load(dtype="float32")`` (float32, as the graphs were made) when first read (torch
    after non-finite output, training, a caller reading it), and assigned like any attribute; it is
    kept in the encoder's ``_loaded``."""

    def __get__(self, encoder: Any, kind: type | None = None) -> Any:
        if encoder is None:
            return self
        if encoder._loaded is None:
            encoder._loaded = encoder._load(dtype="float32")
        return encoder._loaded

    def __set__(self, encoder: Any, model: Any) -> None:
        encoder._loaded = model


@dataclass(frozen=True)
class WarmCrossEncoder:
    """What the graph backends read of a sentence-transformers ``CrossEncoder`` (``model``,
    ``tokenizer``, ``max_seq_length``), from its record, standing in for the model."""

    model: Known
    tokenizer: SavedTokenizer
    max_seq_length: int


def cross_encoder_record(model: Any) -> dict[str, Any] | None:
    """A loaded cross-encoder's record (None where its tokenizer cannot be saved)."""
    tokenizer = tokenizer_record(model.tokenizer)
    if tokenizer is None:
        return None
    return {
        "fingerprint": fingerprint(model.model),
        "tokenizer": tokenizer,
        "max_seq_length": max_length_of(model),
    }


def warm_cross_encoder(record: dict[str, Any]) -> WarmCrossEncoder:
    return WarmCrossEncoder(
        Known(record["fingerprint"]),
        SavedTokenizer(record["tokenizer"]),
        int(record["max_seq_length"]),
    )


def bi_encoder_record(parts: Parts) -> dict[str, Any] | None:
    """A loaded bi-encoder's record, from its ``Parts`` (None where its tokenizer cannot be saved)."""
    tokenizer = tokenizer_record(parts.tokenizer)
    if tokenizer is None:
        return None
    return {"fingerprint": fingerprint(parts.transformer), "tokenizer": tokenizer, "layout": parts.layout()}


def warm_bi_encoder(record: dict[str, Any]) -> Parts:
    return Parts.laid_out(Known(record["fingerprint"]), SavedTokenizer(record["tokenizer"]), record["layout"])


def recall(kind: str, folder: str, options: dict[str, Any]) -> dict[str, Any] | None:
    """The record saved for the model ``folder`` loaded as ``kind`` with ``options``, or None (none
    saved, a file of the folder changed, another library version, or ``folder`` is a hub name)."""
    key = _key(kind, folder, options)
    if key is None:
        return None
    try:
        saved = json.loads(_path(key).read_text())
    except (OSError, ValueError):  # none yet, or unreadable
        return None
    return saved["record"] if isinstance(saved, dict) and saved.get("key") == key else None


def remember(kind: str, folder: str, options: dict[str, Any], record: dict[str, Any] | None) -> None:
    """Saves ``record`` for the model ``folder`` (nothing where it is None or ``folder`` a hub name; a
    cache that cannot be written keeps nothing, and the next process loads the model again)."""
    key = _key(kind, folder, options) if record is not None else None
    if key is None:
        return
    path = _path(key)
    try:
        with written_whole(made_folder(path.parent) / path.name) as tmp:
            tmp.write_text(json.dumps({"key": key, "record": record}))
    except (CacheNotWritable, OSError) as error:
        log.info("model record not saved (%s): the next process loads the model again", error)


def _key(kind: str, folder: str, options: dict[str, Any]) -> dict[str, Any] | None:
    files = _files(Path(folder))
    if files is None:
        return None
    return {
        "format": f"{RECORD_FORMAT}-{EXPORT_FORMAT}",
        "kind": kind,
        "folder": str(Path(folder).resolve()),
        "options": options,
        "files": files,
        "loaders": {name: _version(name) for name in LOADERS},
    }


def _path(key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return cache_root() / "models" / f"{key['kind']}-{digest}.json"


def _files(folder: Path) -> list[list[str | int]] | None:
    """[name, size, mtime_ns, ctime_ns, inode] of every file under ``folder`` (hidden ones and
    ``__pycache__`` aside), sorted; None where ``folder`` is not a folder or a file cannot be read (a
    broken link). The change time and inode are there because a copy that keeps the modification time
    (``cp -p``, ``rsync -a``, unpacking an archive) of a retrained model of the same size keeps neither."""
    if not folder.is_dir():
        return None
    found: list[list[str | int]] = []
    try:
        for root, folders, names in os.walk(folder):
            folders[:] = [name for name in folders if not name.startswith(".") and name != "__pycache__"]
            for name in names:
                if not name.startswith("."):
                    stat = (Path(root) / name).stat()  # through a link: the hub cache's files are links to blobs
                    found.append(
                        [
                            str((Path(root) / name).relative_to(folder)),
                            stat.st_size,
                            stat.st_mtime_ns,
                            stat.st_ctime_ns,
                            stat.st_ino,
                        ]
                    )
    except OSError:
        return None
    return sorted(found)


@functools.cache
def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None
