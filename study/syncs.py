"""Count the host's reads of device values (each one waits for the device on CUDA).

"The training loop never waits for the device" is a property of the code, so it is measured:
on CUDA with ``torch.cuda.set_sync_debug_mode("warn")``, which warns at every synchronising call;
on the CPU, where nothing waits, with a shim that counts calls of the tensor methods that would
(``item``, ``tolist``, ``bool``, ``float``, ``int``, ``numpy``, ``cpu``). ``bench/maskers.py
--count-syncs`` prints the counts per training step; tests use the CPU shim.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

SYNCING_METHODS = ("item", "tolist", "__bool__", "__float__", "__int__", "numpy", "cpu")


class HostReads:
    def __init__(self):
        self.count = 0
        self.calls: list[str] = []


@contextlib.contextmanager
def count_host_reads(device):
    """Yields a :class:`HostReads` whose ``count`` is final when the block ends."""
    import torch

    reads = HostReads()
    if getattr(device, "type", str(device)) == "cuda":
        previous = torch.cuda.get_sync_debug_mode()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                yield reads
            finally:
                torch.cuda.set_sync_debug_mode(previous)
        # where each one happened: the warning points at the synchronising call's line
        reads.calls = [f"{Path(w.filename).name}:{w.lineno}" for w in caught if "synchroniz" in str(w.message)]
        reads.count = len(reads.calls)
        return
    originals = {name: getattr(torch.Tensor, name) for name in SYNCING_METHODS}

    def counting(name, original):
        def method(self, *args, **kwargs):
            reads.count += 1
            reads.calls.append(name)
            return original(self, *args, **kwargs)
        return method

    for name, original in originals.items():
        setattr(torch.Tensor, name, counting(name, original))
    try:
        yield reads
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)
