"""Benchmark of the execution layer: what a fresh worker process per run costs.

1. Overhead of the subprocess pool vs running the same runs in-process, on the tiny-model grid
   (1-layer pretrained MiniLM, tweets): the same N runs (a) one after the other in this process
   with ``train.run_one`` (imports paid once), (b) through ``study run`` on one CPU slot (a fresh
   worker per run: spawn, imports, model load, result file, store write). Prints the per-run
   overhead (b − a) / N, the ratio b / a, and the overhead as a share of a one-minute run
   (target ≤ 5 %). The driver's own split (slot time − the worker's in-run wall time) is shown too.
2. When a GPU is detected: throughput of k = 1, 2, 4 runs packed on one GPU for a
   small backbone (6-layer MiniLM), runs/hour and the ratio to k = 1 (target ≥ 1.8× at the best k).
   Skipped, with a note, on a machine without a GPU.

Run: ``.venv/bin/python bench/scheduler.py [--runs 4] [--keep DIR]``.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TINY = {
    "name": "bench-scheduler",
    "tasks": [{"name": "tweets", "dataset": "tweets-sentiment", "max_train_examples": 16, "max_eval_examples": 8}],
    "models": [{"name": "minilm-l1", "source": "builtin:minilm-l6", "num_hidden_layers": 1}],
    "maskers": [{"name": "none", "kind": "none"}, {"name": "random", "kind": "random-token", "rate": 0.2}],
    "training": {"epochs": 1, "batch_size": 8, "learning_rate": 1.0e-4, "max_length": 16},
    "analysis": {"baseline": "none"},
    "execution": {"cpu_slots": 1, "threads_per_run": 1},
}

SMALL_GPU = {  # a small backbone that leaves a GPU mostly idle when alone: packing should pay
    **TINY,
    "tasks": [{"name": "tweets", "dataset": "tweets-sentiment", "max_train_examples": 2000, "max_eval_examples": 400}],
    "models": [{"name": "minilm-l6", "source": "builtin:minilm-l6"}],
    "training": {"epochs": 1, "batch_size": 32, "learning_rate": 1.0e-4, "max_length": 64},
}


def write(tmp: Path, data: dict, seeds: int, name: str) -> Path:
    data = {**data, "seeds": list(range(seeds)), "store": str(tmp / f"{name}.sqlite")}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def study_run(path: Path, *extra: str) -> float:
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "study.cli", "run", str(path), *extra], capture_output=True,
                         text=True, cwd=path.parent)
    if out.returncode != 0:
        raise SystemExit(f"study run failed:\n{out.stderr[-3000:]}")
    return time.perf_counter() - t


def slot_times(store: Path) -> tuple[list[tuple[float, float]], float, float]:
    """[(slot time, in-run wall time)], first claim time, last record time (driver's clock)."""
    con = sqlite3.connect(store)
    rows = con.execute("SELECT finished_at - started_at, wall_time_s FROM runs WHERE status='done'").fetchall()
    first, last = con.execute("SELECT MIN(started_at), MAX(finished_at) FROM runs").fetchone()
    con.close()
    return rows, first, last


def in_process(path: Path) -> tuple[float, float]:
    """Time to run the grid in this process; returns (total, first-import time)."""
    t0 = time.perf_counter()
    from study.protocol import load_protocol
    from study.spec import expand
    from study.train import run_one

    t_import = time.perf_counter() - t0
    specs = expand(load_protocol(path))
    t = time.perf_counter()
    for spec in specs:
        run_one(spec)
    return time.perf_counter() - t, t_import


def bench_overhead(tmp: Path, runs: int) -> None:
    seeds = max(1, runs // 2)
    n = seeds * 2
    path_in = write(tmp, TINY, seeds, "inproc")
    path_pool = write(tmp, TINY, seeds, "pool")
    # Warm the OS file cache (model weights, dataset CSV, .pyc) for both sides alike.
    subprocess.run([sys.executable, "-c", "import study.train"], check=True)
    t_in, t_import = in_process(path_in)
    t_launch = time.time()
    t_pool = study_run(path_pool)
    slots, first, last = slot_times(tmp / "pool.sqlite")
    driver_start = first - t_launch  # interpreter, protocol, store, lock: once per `study run`
    grid = last - first  # from the first claim to the last result recorded
    per_run = (grid - t_in) / n
    spawn = sum(s - w for s, w in slots) / len(slots)
    mean_run = t_in / n
    print(f"tiny-model grid, {n} runs on 1 CPU slot ({os.cpu_count()} cores; other load on the machine counts)")
    print(f"  in-process, one after the other (imports paid once before, {t_import:.1f}s): {t_in:6.1f}s "
          f"({mean_run:.1f}s per run)")
    print(f"  subprocess pool, first claim to last record:                       {grid:6.1f}s "
          f"(+ {driver_start:.1f}s driver start-up once, {t_pool:.1f}s in all)")
    print(f"  ratio pool / in-process on this grid: {grid / t_in:.2f}x (these runs take only ~{mean_run:.1f}s)")
    print(f"  overhead per run: {per_run:.2f}s (fresh process: spawn, imports, data and model load, result "
          f"hand-off); slot time − the worker's own wall time: {spawn:.2f}s")
    print(f"  as a share of a one-minute run: {100 * per_run / 60:.1f} %  (target ≤ 5 %)")


def bench_packing(tmp: Path, runs: int) -> None:
    from study.scheduler.local import detect_gpus

    gpus = detect_gpus()
    if not gpus:
        print("GPU packing (k = 1, 2, 4 runs per GPU): skipped, no GPU on this machine")
        return
    print(f"GPU packing on GPU {gpus[0]}: {runs} runs of a 6-layer MiniLM (2,000 tweets, 1 epoch) per k")
    base = None
    for k in (1, 2, 4):
        data = {**SMALL_GPU, "execution": {"runs_per_gpu": k, "threads_per_run": 2}}
        path = write(tmp, data, max(1, runs // 2), f"pack{k}")
        t = study_run(path, "--gpus", f"{gpus[0]},")  # a one-GPU list (a bare "1" would be a count)
        per_hour = 3600 * (max(1, runs // 2) * 2) / t
        base = base or per_hour
        print(f"  k={k}: {t:6.1f}s, {per_hour:6.1f} runs/hour, {per_hour / base:.2f}x vs k=1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=4, help="runs per measurement (default 4)")
    ap.add_argument("--keep", help="keep the stores in this folder")
    args = ap.parse_args()
    tmp_ctx = tempfile.TemporaryDirectory(prefix="bench-sched-") if not args.keep else None
    tmp = Path(args.keep or tmp_ctx.name)
    tmp.mkdir(parents=True, exist_ok=True)
    bench_overhead(tmp, args.runs)
    bench_packing(tmp, max(4, args.runs))


if __name__ == "__main__":
    main()
