"""Overhead of mid-run checkpoints: run time with ``checkpoint_every_steps: N`` / without.

    .venv/bin/python bench/checkpoint.py                      # demo cell, N = 25 and 5, 3 rounds
    .venv/bin/python bench/checkpoint.py --every 10 --rounds 5 --protocol protocols/demo.yaml

Each round runs the cell once without checkpoints and once per N, in a rotated order (drift on a
shared machine hits all alike); a run is ``run_one`` of the demo cell's first run, from the spec
to its metrics, checkpoints written into a temporary folder (atomic write + fsync, as a worker
does). Prints per N the median over rounds of the time ratio, the checkpoints' size and the
write time the run itself measured (``RunResult.checkpoint_time_s``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def timed_run(spec, every: int | None) -> tuple[float, float, int]:
    """(seconds, seconds writing checkpoints, bytes of one checkpoint) for one run."""
    from study.checkpoint import checkpoint_path
    from study.train import run_one

    spec = type(spec)(**{**spec.__dict__, "execution": {**spec.execution, "checkpoint_every_steps": every}})
    with tempfile.TemporaryDirectory() as folder:
        t0 = time.perf_counter()
        result = run_one(spec, checkpoint_dir=folder if every else None)
        seconds = time.perf_counter() - t0
        last = checkpoint_path(folder, spec.run_id)  # run_one leaves its last one (the driver deletes it)
        return seconds, result.checkpoint_time_s, last.stat().st_size if last.exists() else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--protocol", default=str(ROOT / "protocols" / "demo.yaml"))
    ap.add_argument("--every", type=int, nargs="+", default=[25, 5])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    from transformers.utils import logging

    from study.protocol import load_protocol
    from study.spec import expand

    logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    spec = expand(load_protocol(args.protocol))[0]
    spec = type(spec)(**{**spec.__dict__, "execution": {**spec.execution, "threads_per_run": args.threads}})
    configs = [None, *args.every]
    timed_run(spec, None)  # warm-up: imports, data, model files
    times: dict = {c: [] for c in configs}
    writes: dict = {c: [] for c in configs}
    size: dict = {}
    for r in range(args.rounds):
        for c in configs[r % len(configs):] + configs[:r % len(configs)]:
            seconds, written, nbytes = timed_run(spec, c)
            times[c].append(seconds)
            writes[c].append(written)
            size[c] = nbytes
        print(f"round {r + 1}: " + ", ".join(f"{'off' if c is None else f'every {c}'} {times[c][-1]:.1f} s"
                                             for c in configs), flush=True)
    base = statistics.median(times[None])
    print(f"cell {spec.label}: {base:.1f} s per run without checkpoints (median of {args.rounds})")
    for c in args.every:
        ratios = [a / b for a, b in zip(times[c], times[None], strict=True)]
        print(f"checkpoint every {c} steps: time ratio {statistics.median(ratios):.3f} (median over rounds; "
              f"min {min(ratios):.3f}, max {max(ratios):.3f}); checkpoint {size[c] / 2**20:.0f} MiB, "
              f"writing took {statistics.median(writes[c]):.2f} s per run")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
