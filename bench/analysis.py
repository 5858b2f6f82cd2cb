"""Benchmark of the statistics layer on a synthetic 90-run study.

2 tasks x 3 models x 3 maskers x 5 seeds, 1,000 evaluation examples per run. Prints:

* the wall time of the full ``study analyze`` work (``analysis.write_analysis``: every table,
  10k bootstrap and multibootstrap resamples, LaTeX/Markdown/CSV, five PNG figures),
  target <= 10 s on a 2-core machine;
* vectorised vs Python-loop-over-resamples speed for the multibootstrap (one comparison,
  and per comparison across the study) and for the paired BCa bootstrap, target >= 20x;
* with ``--coverage``: the coverage simulation behind analysis/README.md's advice.

Run: ``.venv/bin/python bench/analysis.py [--coverage] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

t_import = time.perf_counter()
import numpy as np  # noqa: E402

import analysis  # noqa: E402
from analysis._frames import stable_rng  # noqa: E402
from analysis.bootstrap import bootstrap_means, bootstrap_means_loop  # noqa: E402
from analysis.multiboot import (  # noqa: E402
    example_draws,
    multibootstrap_arrays,
    resample_scores_loop,
)
from analysis.synthetic import synthetic_study  # noqa: E402

IMPORT_S = time.perf_counter() - t_import


def timed(fn, *args, repeat: int = 1, **kwargs):
    """(result, best wall seconds over ``repeat`` calls). The best of several calls is the
    least disturbed by other processes on a shared machine."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        best = min(best, time.perf_counter() - t)
    return out, best


def cpu_and_wall(fn, *args, **kwargs):
    c, w = time.process_time(), time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.process_time() - c, time.perf_counter() - w


def bench_analyze(runs, preds, out_dir, n_boot):
    return cpu_and_wall(analysis.write_analysis, runs, preds, out_dir=out_dir, baseline="none",
                        margin=0.005, n_boot=n_boot, seed=0)


def bench_multibootstrap(runs, preds, n_boot: int, loop_boot: int):
    """One comparison: vectorised (all n_boot) vs the loop (loop_boot resamples)."""
    sel = preds[(preds.task == "mrpc") & (preds.model == "bert")]
    labels = sel[sel.run_id == sel.run_id.iloc[0]].sort_values("example_id").label.to_numpy()

    def stack(masker):
        part = sel[sel.masker == masker].sort_values(["seed", "example_id"])
        return part.prediction.to_numpy().reshape(part.seed.nunique(), -1)

    pt, pb = stack("typhoon"), stack("none")
    s, n = pt.shape
    ex = np.concatenate(example_draws(0, "mrpc", loop_boot, n))
    si = stable_rng(0, "loop").integers(0, s, (loop_boot, s))
    vec_s = loop_s = float("inf")
    for _ in range(3):  # interleaved, best of three: fair under a fluctuating load
        vec_s = min(vec_s, timed(multibootstrap_arrays, labels, pt, pb, "f1", n_boot=n_boot,
                                 seed=0, key=("mrpc", "bert"))[1])
        loop_s = min(loop_s, timed(resample_scores_loop, labels, pt, pb, "f1", 2, si, ex)[1])
    return vec_s / n_boot, loop_s / loop_boot


def bench_study_multibootstrap(runs, preds, n_boot: int):
    mb, secs = timed(analysis.multibootstrap, preds, runs, baseline="none", n_boot=n_boot,
                     repeat=3)
    return secs / (len(mb) * n_boot), len(mb)


def bench_paired_bootstrap(n_boot: int):
    d = np.random.default_rng(0).normal(0.005, 0.01, 5)
    _, vec = timed(bootstrap_means, d, n_boot, np.random.default_rng(1), repeat=5)
    _, loop = timed(bootstrap_means_loop, d, n_boot, np.random.default_rng(1))
    return vec, loop


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-boot", type=int, default=10_000)
    ap.add_argument("--loop-boot", type=int, default=1_000,
                    help="resamples timed in the Python loop (per-resample cost is reported)")
    ap.add_argument("--coverage", action="store_true", help="also run the coverage simulation")
    ap.add_argument("--out", type=Path, default=None, help="keep the written files here")
    args = ap.parse_args(argv)

    runs, preds = synthetic_study(n_examples=1000, seed=0)
    print(f"synthetic study: {len(runs)} runs, {len(preds)} prediction rows")
    print(f"import analysis (+numpy/scipy/pandas): {IMPORT_S:.2f} s")

    out_dir = args.out or Path(tempfile.mkdtemp(prefix="bench-analysis-"))
    files, cpu, secs = bench_analyze(runs, preds, out_dir, args.n_boot)
    verdict = "OK" if secs + IMPORT_S <= 10 else "OVER BUDGET"
    print(f"write_analysis (all tables, {args.n_boot} resamples, {len(files)} files incl. figures):"
          f" {secs:.2f} s wall ({cpu:.2f} s CPU); with import {secs + IMPORT_S:.2f} s"
          f"  [target <= 10 s: {verdict}]")

    vec, loop = bench_multibootstrap(runs, preds, args.n_boot, args.loop_boot)
    print(f"multibootstrap, one comparison (5 seeds x 1000 examples, F1): vectorised "
          f"{vec * 1e6:.1f} us/resample, Python loop {loop * 1e6:.1f} us/resample -> "
          f"{loop / vec:.1f}x")
    per, n_cmp = bench_study_multibootstrap(runs, preds, args.n_boot)
    print(f"multibootstrap, whole study ({n_cmp} comparisons, example resamples shared per task):"
          f" {per * 1e6:.1f} us per comparison-resample vs loop {loop * 1e6:.1f} -> "
          f"{loop / per:.1f}x  [target >= 20x: {'OK' if loop / per >= 20 else 'MISSED'}]")
    v, lp = bench_paired_bootstrap(args.n_boot)
    print(f"paired bootstrap of the mean (n=5, {args.n_boot} resamples): vectorised {v * 1e3:.2f} ms,"
          f" Python loop {lp * 1e3:.1f} ms -> {lp / v:.0f}x")

    if args.coverage:
        t = time.perf_counter()
        cov = analysis.coverage_simulation(ns=(5, 10, 20, 30), n_sim=4000, n_boot=2000, seed=0)
        wide = cov.pivot_table(index=["distribution", "n"], columns="interval", values="coverage")
        print(f"\ncoverage of nominal 95 % intervals (4000 data sets, 2000 resamples; "
              f"MC se ~0.0035), {time.perf_counter() - t:.1f} s:")
        print(wide[["t", "bca", "percentile"]].round(3).to_string())
    print(f"\nfiles in {out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
