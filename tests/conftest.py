"""Test-session set-up that must precede any CUDA use (pytest imports this first).

- ``CUBLAS_WORKSPACE_CONFIG`` is read by cuBLAS once per process, at its first call: it is set
  here, at session start, so in-process deterministic runs work on a GPU machine.
- ``MASKSTUDY_DEVICE=cpu``: every in-process run and every worker a test starts computes on the
  CPU, also on a GPU machine, except in tests marked ``gpu`` (which get ``cuda``, and skip
  without a GPU). Tests then give the same numbers everywhere.
"""

from __future__ import annotations

import os

import pytest

from study.device import DEVICE_ENV
from study.seeding import CUBLAS_WORKSPACE

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
os.environ[DEVICE_ENV] = "cpu"


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if gpu_items and not _cuda_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU (marker gpu)")
        for item in gpu_items:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _device_for_marker(request, monkeypatch):
    if request.node.get_closest_marker("gpu"):
        monkeypatch.setenv(DEVICE_ENV, "cuda")
    yield
