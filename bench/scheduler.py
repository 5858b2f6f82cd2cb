"""Benchmark of the execution layer: what a fresh worker process per run costs.

1. Overhead of the subprocess pool vs running the same runs in-process, on the tiny-model grid
   (1-layer pretrained MiniLM, tweets): the same N runs (a) one after the other in one Python
   process with ``train.run_one``, after an untimed warm-up run (imports, data parse), and
   (b) through ``study run`` on one CPU slot, a fresh worker process per run (fork, result file,
   store write; spawn also pays interpreter, imports, data and model load) — with each launcher,
   the fork server (default) and fresh interpreters (``execution.worker_start: spawn``). Prints
   the per-run overhead (first claim to last record − (a)) / N as a share of a one-minute run
   (target ≤ 5 %), and what ``study run`` pays once (driver start-up, fork-server warm-up).
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


def slot_times(store: Path) -> tuple[float, float]:
    """First claim time and last record time of a store (driver's clock)."""
    con = sqlite3.connect(store)
    first, last = con.execute("SELECT MIN(started_at), MAX(finished_at) FROM runs").fetchone()
    con.close()
    return first, last


IN_PROCESS = """
import sys, time
t0 = time.perf_counter()
from study.protocol import load_protocol
from study.spec import expand
from study.train import run_one
warm, timed = sys.argv[1], sys.argv[2]
run_one(expand(load_protocol(warm))[0])  # pays the first-run costs: model modules, data parse
t = time.perf_counter()
for spec in expand(load_protocol(timed)):
    run_one(spec)
print(time.perf_counter() - t, t - t0)
"""


def in_process(warm: Path, timed: Path) -> tuple[float, float]:
    """(time of the timed runs, one after the other, warm; start-up + warm-up run) in a fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", IN_PROCESS, str(warm), str(timed)], capture_output=True, text=True,
                         cwd=timed.parent, env={**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"})
    if out.returncode != 0:
        raise SystemExit(f"in-process runs failed:\n{out.stderr[-3000:]}")
    runs, startup = map(float, out.stdout.split()[-2:])
    return runs, startup


def pool(tmp: Path, seeds: int, start: str) -> tuple[float, float]:
    """(first claim to last record, everything else of the `study run` call) for one launcher."""
    data = {**TINY, "execution": {**TINY["execution"], "worker_start": start}}
    path = write(tmp, data, seeds, f"pool-{start}")
    total = study_run(path)
    first, last = slot_times(tmp / f"pool-{start}.sqlite")
    return last - first, total - (last - first)


def bench_overhead(tmp: Path, runs: int) -> None:
    seeds = max(1, runs // 2)
    n = seeds * 2
    # Warm the OS file cache (model weights, dataset, .pyc) for every side alike.
    subprocess.run([sys.executable, "-c", "import study.train"], check=True)
    warm = write(tmp, TINY, 1, "warm")
    t_in, in_startup = in_process(warm, write(tmp, TINY, seeds, "inproc"))
    mean_run = t_in / n
    print(f"tiny-model grid, {n} runs on 1 CPU slot, 1 thread ({os.cpu_count()} cores; other load counts)")
    print(f"  in-process, warm (after one untimed run): {t_in:6.1f}s ({mean_run:.2f}s per run; "
          f"interpreter, imports and the warm-up run {in_startup:.1f}s once)")
    per_run = {}
    for start in ("forkserver", "spawn"):
        span, once = pool(tmp, seeds, start)
        per_run[start] = (span - t_in) / n
        print(f"  study run, workers {start:10s}: first claim to last record {span:6.1f}s "
              f"-> overhead {per_run[start]:5.2f}s per run = {100 * per_run[start] / 60:4.1f} % of a one-minute run; "
              f"once per study run (driver start-up, warm-up, exit): {once:.1f}s")
    fork, spawn = per_run["forkserver"], per_run["spawn"]
    print(f"  per-run overhead, fork server vs fresh interpreter: {fork:.2f}s vs {spawn:.2f}s "
          f"({spawn / fork if fork > 0 else float('inf'):.1f}x less)")
    print(f"  target: ≤ 5 % of a one-minute run (3 s per run); the default launcher (fork server) is at "
          f"{100 * fork / 60:.1f} %")


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
