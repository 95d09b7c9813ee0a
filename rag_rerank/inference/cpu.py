"""Whether this CPU has the instructions a low-precision fast path needs.

int8 (``torch._int_mm``) pays only with AVX-512 VNNI / AVX-VNNI / AMX, bfloat16 only with
AVX-512 BF16 / AMX. Without them PyTorch falls back to generic kernels, many times slower than
float32, which would make a "fast" backend slower than the default. Measuring one MiniLM-sized
Linear is cheaper and surer than parsing CPU flags across vendors and operating systems.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

from rag_rerank.inference.cache import cache_root, measured_once

MEASUREMENT_ROUNDS = 9  # float32 and the kind timed in turns, best of each: steady under other work


@functools.cache
def matmul_speedup(kind: str) -> float:
    """How many times faster this CPU multiplies ``kind`` ("int8", "bfloat16", "float16")
    matrices than float32, on one Linear of a MiniLM layer (64 tokens x 384 -> 1536).

    Measured once per machine and torch version, and saved under ``RAG_RERANK_CACHE``
    (``cpu-<identity>-torch-<version>-<kind>.json``), so every process on it (an ingest, the server's
    workers, a notebook) makes the same ``auto`` choice; delete the file to measure again. Processes
    starting together measure one at a time, so they do not disturb each other's timings."""
    path = cache_root() / f"cpu-{identity()}-torch-{_torch_version()}-{kind}.json"
    return measured_once(path, "speedup", lambda: _measured_speedup(kind))


def _torch_version() -> str:
    """torch's version as installed, read without importing it (1-2 s), so that a saved measurement
    is read without torch; torch's own where it is not installed as a distribution."""
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        import torch

        return str(torch.__version__)


def _measured_speedup(kind: str) -> float:
    import torch

    x, w = torch.randn(64, 384), torch.randn(384, 1536)
    if kind == "int8":
        x8 = torch.randint(-127, 128, (64, 384), dtype=torch.int8)
        w8 = torch.randint(-127, 128, (1536, 384), dtype=torch.int8).t()  # the layout Int8Linear uses
        fast = functools.partial(torch._int_mm, x8, w8)
    else:
        dtype = getattr(torch, kind)
        fast = functools.partial(torch.mm, x.to(dtype), w.to(dtype))
    return speedup_of(functools.partial(torch.mm, x, w), fast)


def speedup_of(exact: Callable[[], object], fast: Callable[[], object], rounds: int = MEASUREMENT_ROUNDS) -> float:
    """How many times faster ``fast`` runs than ``exact``: after a warm-up of each, timed in turns
    (a burst of other work slows both, not one), best of ``rounds`` each."""
    exact(), fast()  # warm-up: first-call dispatch and allocation
    exact_best = fast_best = float("inf")
    for _ in range(rounds):
        exact_best = min(exact_best, seconds_of(exact))
        fast_best = min(fast_best, seconds_of(fast))
    return exact_best / fast_best


def seconds_of(run: Callable[[], object]) -> float:
    """One timed call of ``run``."""
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def slow_precision(backend: str, dtype: str) -> str | None:
    """Why this CPU would run ``backend``/``dtype`` slower than float32, or None if it would not."""
    kind = "int8" if backend == "torch-int8" else dtype
    if kind == "float32":
        return None
    speedup = matmul_speedup(kind)
    if speedup >= 1:
        return None
    needs = "AVX-512 VNNI, AVX-VNNI or AMX" if kind == "int8" else "AVX-512 BF16 or AMX"
    return f"this CPU multiplies {kind} matrices at {speedup:.2f}x its float32 rate (it lacks {needs})"


@functools.cache
def identity() -> str:
    """This CPU as a short key (model name, instruction flags, cores), so that a speed measured on
    one machine is not reused on another that shares the cache folder."""
    fields = _cpuinfo()
    described = [fields.get("model name", platform.processor()), fields.get("flags", ""), str(os.cpu_count())]
    return hashlib.sha256("|".join(described).encode()).hexdigest()[:12]


FEATURES = ("avx2", "avx_vnni", "avx512_vnni", "avx512_bf16", "amx")  # the flags that decide which fast path pays


def describe() -> str:
    """This CPU as every speed figure must name it: model (family and model number where the name is
    generic), cores, and the flags in ``FEATURES``."""
    fields = _cpuinfo()
    name = fields.get("model name") or platform.processor() or platform.machine() or "unknown CPU"
    if "cpu family" in fields:
        name += f" (family {fields['cpu family']}, model {fields.get('model', '?')})"
    shown = [flag for flag in fields.get("flags", "").split() if flag.startswith(FEATURES)]
    return f"{name}, {os.cpu_count()} cores, flags {' '.join(shown) or 'none of ' + '/'.join(FEATURES)}"


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (none where it is not Linux)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().split("\n\n")[0].splitlines()
    except OSError:
        return {}
    return {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in lines)}
