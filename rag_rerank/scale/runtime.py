"""Starting Ray, and sizing each actor's share of the machine."""

from __future__ import annotations

from typing import Any

RAY_EXTRA = "pip install 'rag-rerank[ray]'"


def start_ray(address: str | None = None, *, num_cpus: int | None = None) -> Any:
    """Connect to Ray: the cluster at ``address`` (``"auto"``, ``"ray://head:10001"``), else the one
    ``RAY_ADDRESS`` names, else a new local Ray on this machine (``num_cpus`` of it). A session
    already running in this process is reused. Returns the ``ray`` module."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise ImportError(f"Ray is an optional extra: {RAY_EXTRA}") from exc
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    return ray


def actor_threads(cpus: float) -> None:
    """Give torch in a Ray actor as many threads as CPUs the actor reserved (at least one), no more:
    actors on one machine then share its cores instead of fighting over them."""
    import torch

    torch.set_num_threads(max(1, int(cpus)))


def check_pool(actors: int, cpus_per_actor: float) -> None:
    if not isinstance(actors, int) or actors < 1:
        raise ValueError(f"actors must be a positive integer, got {actors!r}")
    if cpus_per_actor <= 0:
        raise ValueError(f"cpus_per_actor must be > 0, got {cpus_per_actor!r}")
