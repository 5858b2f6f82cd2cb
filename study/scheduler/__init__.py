"""Execution: a driver (``driver.py``) over three backends — the local GPU-slot pool
(``local.py``, default; workers forked from ``forkserver.py``), Ray (``ray_backend.py``) and
Slurm via submitit (``slurm.py``), all around the worker command of ``launch.py`` — with one
driver per store (``lock.py``). ``run.execute`` is what ``study run`` calls; ``plan.py``
serves ``study plan`` and ``study status``."""

from __future__ import annotations

from pathlib import Path

BACKENDS = ("local", "ray", "slurm")


def make_backend(name: str, protocol, store_path: str | Path, gpus: list[int] | None = None):
    if name == "local":
        from study.scheduler.local import LocalPool

        return LocalPool(protocol, store_path, gpus=gpus)
    if name == "ray":
        from study.scheduler.ray_backend import RayBackend

        return RayBackend(protocol, store_path)
    if name == "slurm":
        from study.scheduler.slurm import SlurmBackend

        return SlurmBackend(protocol)
    raise ValueError(f"unknown backend {name!r}; use one of {', '.join(BACKENDS)}")
