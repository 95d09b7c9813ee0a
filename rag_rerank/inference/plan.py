"""auto's plan: what runs for one model on this machine (backend, precision, why, and the measurements
that decided it), kept as a file and read before anything is built.

A plan is keyed by what the choice depends on: the task ("cross-encoder", "bi-encoder"), the model's
fingerprint (every weight), this CPU (``cpu.identity``), the device, the installed runtimes and their
versions, and the rule's candidate. It lives beside the verdicts
(``RAG_RERANK_CACHE/verdicts/<fingerprint>/plan-<task>-<key>.json``), and a saved plan is used only
where its key is this machine's and model's and the measurement files it rests on are unchanged
(edit or delete one and the plan is made again). A plan made on another CPU or for another model
is never used, even when copied into place.

``RAG_RERANK_PLAN`` names a file (``rag-rerank doctor --write FILE``) that pins each task's backend
and precision, so that a fleet of servers and CI run the same path: a pinned lossy path is still
checked against float32 on each machine before its first use there.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from rag_rerank.inference.cache import CacheNotWritable, cache_root, consulted, made_folder, written_whole
from rag_rerank.inference.cpu import identity
from rag_rerank.inference.export import EXPORT_FORMAT, fingerprint

log = logging.getLogger(__name__)

PLAN_VARIABLE = "RAG_RERANK_PLAN"
PLAN_FORMAT = 1  # part of the key: a plan written by another rule is made again
RUNTIMES = ("torch", "onnxruntime", "openvino", "transformers")
TASKS = ("cross-encoder", "bi-encoder")
NEEDS = {  # the runtime a backend needs, and the extra that installs it
    "onnx": ("onnxruntime", "onnx"),
    "onnx-int8": ("onnxruntime", "onnx"),
    "openvino": ("openvino", "openvino"),
}


@dataclass(frozen=True)
class Choice:
    """A backend and precision, and why: the rule's candidate, before the checks that need the model."""

    backend: str
    dtype: str
    why: str
    pinned: bool = False  # by RAG_RERANK_PLAN: checked against float32, never swapped for a faster path


@dataclass(frozen=True)
class Plan:
    """What auto runs for one model on this machine.

    Attributes:
        task: "cross-encoder" or "bi-encoder".
        backend, dtype: What runs.
        why: The reasons, in words.
        measured: The numbers that decided it (calibration agreement, speed ratios).
        source: "measured" (in this process), "saved" (read from ``path``), "fallback" (not saved) or
            "asked for" (an explicit backend or dtype: nothing decided).
        path: The plan's file, where it has one.
    """

    task: str
    backend: str
    dtype: str
    why: str
    measured: dict[str, float] = field(default_factory=dict)
    source: str = "measured"
    path: str | None = None


def runtimes() -> dict[str, str]:
    """The installed runtimes auto chooses between, with their versions."""
    found = {}
    for name in RUNTIMES:
        if importlib.util.find_spec(name) is not None:
            try:
                found[name] = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:  # importable, not installed as a distribution
                found[name] = "unknown"
    return found


def plan_key(task: str, hf_model: Any, device: str, candidate: Choice) -> dict[str, Any]:
    """Everything a plan for ``hf_model`` depends on: another value anywhere means another plan."""
    return {
        "format": f"{PLAN_FORMAT}-{EXPORT_FORMAT}",
        "task": task,
        "model": fingerprint(hf_model),
        "cpu": identity(),
        "device": device,
        "runtimes": runtimes(),
        "candidate": [candidate.backend, candidate.dtype, candidate.pinned],
    }


def plan_path(key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return cache_root() / "verdicts" / key["model"] / f"plan-{key['task']}-{digest}.json"


def planned(task: str, hf_model: Any, device: str, candidate: Choice, decide: Callable[[], Plan]) -> Plan:
    """The saved plan for this task, model, machine and candidate; else ``decide()``'s, saved.

    Args:
        task: "cross-encoder" or "bi-encoder".
        hf_model: The loaded transformer (its weights key the plan).
        device: Where it runs.
        candidate: The rule's choice, before the checks (part of the key).
        decide: Makes the checks and measurements and says what runs.

    Returns:
        The plan, ``source`` "saved" or "measured".
    """
    key = plan_key(task, hf_model, device, candidate)
    path = plan_path(key)
    if (saved := _saved(path, key)) is not None:
        return saved
    with consulted() as rests_on:
        plan = decide()
    _save(plan, path, key, rests_on)
    return replace(plan, path=str(path))


def saved_plan(task: str, hf_model: Any, device: str, candidate: Choice) -> Plan | None:
    """The plan ``planned`` saved for this task, model (``export.Known`` too), machine and candidate,
    or None where there is none or what it rests on changed: what a warm start builds from."""
    key = plan_key(task, hf_model, device, candidate)
    return _saved(plan_path(key), key)


def _saved(path: Path, key: dict[str, Any]) -> Plan | None:
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):  # none yet, or unreadable: decide
        return None
    if not isinstance(saved, dict) or saved.get("key") != key:  # copied from another machine or model
        log.info("plan %s is for another machine, model or runtime: deciding again", path)
        return None
    for measurement, digest in saved.get("rests_on", {}).items():
        if _digest(Path(measurement)) != digest:  # edited or deleted: measure again
            log.info("plan %s rests on %s, which changed: deciding again", path, measurement)
            return None
    plan = saved["plan"]
    return Plan(**{**plan, "source": "saved", "path": str(path)})


def _save(plan: Plan, path: Path, key: dict[str, Any], rests_on: list[Path]) -> None:
    record = {
        "key": key,
        "plan": {name: value for name, value in asdict(plan).items() if name not in ("source", "path")},
        "rests_on": {str(p): _digest(p) for p in dict.fromkeys(rests_on)},
    }
    try:
        with written_whole(made_folder(path.parent) / path.name) as tmp:
            tmp.write_text(json.dumps(record, indent=1))
    except (CacheNotWritable, OSError) as error:  # a read-only cache: decided again in the next process
        log.info("plan not saved (%s): decided again in the next process", error)


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError:
        return None


def pinned(task: str, paths: dict[str, tuple[str, ...]]) -> Choice | None:
    """The backend and precision ``RAG_RERANK_PLAN``'s file pins for ``task``, or None.

    Args:
        task: "cross-encoder" or "bi-encoder".
        paths: The task's backends, each with the precisions it runs.

    Raises:
        ValueError: the file cannot be read, is not a plan, pins a path the task does not have, or
            one whose runtime is not installed (naming the file and the fix).
    """
    name = pinned_file()
    if name is None:
        return None
    try:
        pins = json.loads(Path(name).read_text())
    except (OSError, ValueError) as error:
        raise ValueError(
            f"{PLAN_VARIABLE}={name} cannot be read as a plan ({error}); rag-rerank doctor --write FILE writes one"
        ) from error
    pin = pins.get(task) if isinstance(pins, dict) else None
    if pin is None:
        return None
    backend, dtype = (pin.get("backend"), pin.get("dtype")) if isinstance(pin, dict) else (None, None)
    if backend not in paths or dtype not in paths[backend]:
        runs = "; ".join(f"{path}: {', '.join(dtypes)}" for path, dtypes in paths.items())
        raise ValueError(f"{PLAN_VARIABLE}={name} pins the {task} to {pin!r}; it runs a backend and dtype of ({runs})")
    if backend in NEEDS and importlib.util.find_spec(NEEDS[backend][0]) is None:
        runtime, extra = NEEDS[backend]
        raise ValueError(
            f"{PLAN_VARIABLE}={name} pins the {task} to {backend}, but {runtime} is not installed here: "
            f"pip install 'rag-rerank[{extra}]', or unset {PLAN_VARIABLE} to let auto choose"
        )
    return Choice(backend, dtype, f"pinned by {PLAN_VARIABLE}={name}", pinned=True)


def pinned_file() -> str | None:
    """The pin file ``RAG_RERANK_PLAN`` names, or None."""
    return os.environ.get(PLAN_VARIABLE) or None


def write_pins(plans: list[Plan], path: Path) -> None:
    """A file for ``RAG_RERANK_PLAN`` pinning each plan's backend and precision (why, for people)."""
    pins = {plan.task: {"backend": plan.backend, "dtype": plan.dtype, "why": plan.why} for plan in plans}
    path.write_text(json.dumps(pins, indent=1) + "\n")
