"""Where the ONNX and OpenVINO backends keep what they build once per model: exported graphs and
auto's measurements, under ``RAG_RERANK_CACHE`` (default ``~/.cache/rag-rerank``).

Writes are whole or absent (a temporary file renamed into place; a failed write leaves nothing),
processes starting together build each file once (a file lock; the others wait and read it), and
a cache that cannot be written (read-only, full, over quota) raises ``CacheNotWritable`` naming the
fix. A cache filled earlier, e.g. while a container image was built, is only read.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from pathlib import Path

log = logging.getLogger(__name__)


def cache_root() -> Path:
    """``RAG_RERANK_CACHE``, else ``~/.cache/rag-rerank``: read at each call, so tests and processes may move it."""
    return Path(os.environ.get("RAG_RERANK_CACHE", Path.home() / ".cache" / "rag-rerank"))


class CacheNotWritable(OSError):
    """The graph cache (``RAG_RERANK_CACHE``) cannot be written: a read-only or full disk. Reading a
    cache filled earlier (e.g. while a container image was built) needs no write."""


_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}  # over quota (not every platform names it)
_UNWRITABLE = _FULL | {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR}


def _not_writable(path: Path, error: OSError) -> CacheNotWritable:
    fix = "free some space there, or set" if error.errno in _FULL else "set"
    return CacheNotWritable(
        error.errno,
        f"cannot write {path} ({error.strerror}): {fix} RAG_RERANK_CACHE to a writable folder with ~0.3 GB "
        "free (the ONNX and OpenVINO backends keep each model's graphs there)",
    )


def made_folder(path: Path) -> Path:
    """``path`` as a folder, made if needed (``CacheNotWritable`` where it cannot be)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise (_not_writable(path, error) if error.errno in _UNWRITABLE else error) from error
    return path


@contextmanager
def written_whole(path: Path) -> Iterator[Path]:
    """A temporary name beside ``path`` to write to, renamed to ``path`` when the block ends well:
    readers (other processes too) see no file or the whole one. On an error (a full disk) the
    partial file is removed, so failed attempts do not fill the disk further; a disk that cannot be
    written raises ``CacheNotWritable``, saying what to do."""
    tmp = temporary_name(path)
    try:
        yield tmp
        tmp.replace(path)
    except OSError as error:
        raise (_not_writable(path, error) if error.errno in _UNWRITABLE else error) from error
    finally:
        with suppress(OSError):  # renamed already, never written, or its folder unwritable
            tmp.unlink()


LOCK_WAIT = 600  # seconds a process waits for another one's export or measurement before doing its own


@contextmanager
def one_process_at_a_time(path: Path) -> Iterator[None]:
    """Holds ``<path>.lock``, so that processes starting together (server workers, Ray replicas on one
    machine) export or measure ``path`` once: the others wait, then find it made; a measurement of
    speed is also not disturbed by the others' measurements. Where the lock cannot be taken (a
    read-only cache) or is held too long, it goes ahead without."""
    from filelock import FileLock, Timeout

    lock = FileLock(f"{path}.lock", timeout=LOCK_WAIT)
    try:
        lock.acquire()
        held = True
    except (Timeout, OSError):
        held = False
    try:
        yield
    finally:
        if held:
            lock.release()


def temporary_name(path: Path) -> Path:
    """A name beside ``path`` that no other process or thread writes to."""
    return path.with_name(f"{path.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp{path.suffix}")


def made_once(path: Path, make: Callable[[], None]) -> Path:
    """``path``, made by ``make()`` unless it exists or another process makes it meanwhile."""
    if not path.exists():
        with one_process_at_a_time(path):
            if not path.exists():
                make()
    return path


def measured_once(path: Path, name: str, measure: Callable[[], float], inputs: str = "") -> float:
    """``measure()``, or what an earlier process saved in ``path`` under ``name`` for the same
    ``inputs`` (a digest of what was measured: other inputs are measured again). Processes measure one
    at a time, the others wait and read it (measuring beside each other would also disturb the
    timings); written whole. Where the cache cannot be written the value is returned unsaved, and the
    next process measures again."""
    if (reading := _consulted.get()) is not None:
        reading.append(path)
    if (saved := _saved(path, name, inputs)) is not None:
        return saved
    try:
        made_folder(path.parent)
    except OSError as error:  # read-only, full, or a file where the folder should be
        log.info("%s measured but not saved (%s): measured again in the next process", name, error)
        return measure()
    with one_process_at_a_time(path):
        if (saved := _saved(path, name, inputs)) is not None:  # measured by another process meanwhile
            return saved
        value = measure()
        try:
            with written_whole(path) as written:
                written.write_text(json.dumps({name: value, "inputs": inputs}))
        except CacheNotWritable as error:  # e.g. the graphs were read from a cache filled earlier
            log.info("%s measured but not saved (%s): measured again in the next process", name, error)
    return value


def _saved(path: Path, name: str, inputs: str) -> float | None:
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):  # none yet, or unreadable: measure
        return None
    return float(saved[name]) if isinstance(saved, dict) and name in saved and saved.get("inputs") == inputs else None


_consulted: ContextVar[list[Path] | None] = ContextVar("consulted", default=None)


@contextmanager
def consulted() -> Iterator[list[Path]]:
    """The measurement files (``measured_once``) read or written inside the block, in order: what
    a decision rests on, so that editing or deleting one of them makes it be taken again."""
    paths: list[Path] = []
    token = _consulted.set(paths)
    try:
        yield paths
    finally:
        _consulted.reset(token)
