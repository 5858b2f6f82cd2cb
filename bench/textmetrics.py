"""Benchmark of the generation metrics (analysis/textmetrics.py) on E2E's test set: 630 meaning
representations with 1-14 references each (../shared/data/e2e; a synthetic stand-in of the
same shape without it). Hypotheses are references with words dropped (a seeded stand-in
for a system). Prints, each as a ratio against a baseline measured in the same run:

* paired bootstrap (1000 resamples) and paired AR (10,000 trials) of BLEU and chrF against
  sacrebleu's PairedTest on the same texts, with both p-values (they must be equal);
* the multibootstrap of a 2 maskers x 5 seeds study (2,000 seed x example resamples) from
  stored statistics vs a loop calling corpus_score on every drawn run (the naive route);
* per-example statistics (what a seq2seq run pays once at evaluation), per metric;
* GLEU on JFLEG dev (source as hypothesis) vs the JFLEG scorer's value (tests/stats/data/jfleg_gleu_scorer.json).

Run: ``.venv/bin/python bench/textmetrics.py``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "tests" / "stats"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis import multibootstrap  # noqa: E402
from analysis import textmetrics as tm  # noqa: E402

DATA = ROOT.parent / "shared" / "data"


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


def e2e_corpus():
    path = DATA / "e2e" / "testset_w_refs.csv"
    if path.is_file():
        df = pd.read_csv(path)
        groups = df.groupby("mr", sort=False)["ref"].apply(list)
        return list(groups.index), list(groups.values), "E2E test"
    rng = np.random.default_rng(0)
    words = "the a cheap coffee shop near river family friendly rated serves food".split()
    refs = [[" ".join(rng.choice(words, 12)) for _ in range(rng.integers(1, 15))] for _ in range(630)]
    return [f"mr {i}" for i in range(630)], refs, "synthetic (E2E's shape)"


def system(refs, drop, seed):
    rng = np.random.default_rng(seed)
    return [" ".join(w for w in r[0].split() if rng.random() > drop) for r in refs]


def streams(refs):
    k = max(len(r) for r in refs)
    return [[r[j] if j < len(r) else None for r in refs] for j in range(k)]


def bench_paired(refs):
    import os

    from sacrebleu.metrics import BLEU, CHRF
    from sacrebleu.significance import PairedTest

    os.environ["SACREBLEU_SEED"] = "12345"
    base, sys_ = system(refs, 0.3, 1), system(refs, 0.29, 2)  # close: p away from its floor
    print("\npaired tests, one system against a baseline (p must be equal):")
    for metric, cls in (("bleu", BLEU), ("chrf", CHRF)):
        sb = [tm.example_stats(metric, h, r) for h, r in zip(base, refs, strict=True)]
        ss = [tm.example_stats(metric, h, r) for h, r in zip(sys_, refs, strict=True)]
        for test, fn, n in (("bs", tm.paired_bootstrap, 1000), ("ar", tm.paired_ar, 10000)):
            ours, t_ours = timed(fn, sb, ss, metric, n_samples=n)
            (_, theirs), t_sb = timed(PairedTest([("b", base), ("s", sys_)], {metric: cls()},
                                                 streams(refs), test_type=test, n_samples=n))
            p_sb = theirs[next(k for k in theirs if k != "System")][1].p_value
            print(f"  {metric:5s} paired-{test} ({n:>5}): ours {t_ours:6.2f} s (from stored stats), "
                  f"sacrebleu {t_sb:6.2f} s (from text) -> x{t_sb / t_ours:5.1f}; "
                  f"p {ours.p_value:.4f} vs {p_sb:.4f}")


def bench_multiboot(refs, n_boot=2000):
    rows, runs = [], []
    for masker, drop in (("none", 0.3), ("random", 0.27)):
        for s in range(5):
            hyps = system(refs, drop, 10 * s + (masker == "random"))
            stats = [tm.example_stats("bleu", h, r) for h, r in zip(hyps, refs, strict=True)]
            runs.append({"task": "e2e", "model": "m", "masker": masker, "seed": s, "metric": "bleu",
                         "value": tm.corpus_score("bleu", stats) / 100})
            rows += [{"task": "e2e", "model": "m", "masker": masker, "seed": s,
                      "example_id": f"{i:04d}", "stats": st} for i, st in enumerate(stats)]
    preds, runs = pd.DataFrame(rows), pd.DataFrame(runs)
    _, t_vec = timed(multibootstrap, preds, runs, baseline="none", n_boot=n_boot, seed=0)
    # naive: corpus_score of every drawn run on every resample (a subset, scaled up)
    mats = [np.asarray(g["stats"].tolist()) for _, g in preds.groupby(["masker", "seed"])]
    rng = np.random.default_rng(0)
    sub = 100
    t = time.perf_counter()
    for _ in range(sub):
        d = rng.integers(0, len(refs), len(refs))
        for m in mats:
            tm.corpus_score("bleu", m[d])
    t_loop = (time.perf_counter() - t) * n_boot / sub
    print(f"\nmultibootstrap, 10 runs x {len(refs)} examples x {n_boot} resamples (BLEU): "
          f"{t_vec:.2f} s; loop over resamples {t_loop:.1f} s (from {sub}) -> x{t_loop / t_vec:.0f}")


def bench_example_stats(hyps, refs, srcs):
    print("\nper-example statistics (once per run at evaluation):")
    n = 200
    for metric in tm.TEXT_METRICS:
        _, t = timed(lambda m=metric: [tm.example_stats(m, h, r, s) for h, r, s in
                                       zip(hyps[:n], refs[:n], srcs[:n], strict=True)])
        print(f"  {metric:12s} {1e3 * t / n:6.2f} ms per example")


def bench_gleu():
    dev = DATA / "jfleg" / "dev"
    if not dev.is_dir():
        print("\nGLEU: ../shared/data/jfleg absent, skipped")
        return
    from test_textmetrics import SCORER

    srcs = (dev / "dev.src").read_text().splitlines()
    refs = [list(r) for r in zip(*[(dev / f"dev.ref{j}").read_text().splitlines() for j in range(4)],
                                 strict=True)]
    expected = SCORER["jfleg_dev_source"]
    stats, t_stats = timed(lambda: [tm.example_stats("gleu", s, r, s) for s, r in zip(srcs, refs, strict=True)])
    got, t_score = timed(tm.corpus_score, "gleu", stats)
    print(f"\nGLEU, JFLEG dev source as hypothesis: {got:.6f} (JFLEG scorer {expected:.6f}); "
          f"ours {t_stats:.2f} s stats + {t_score:.3f} s score")
    fixed = [tm.example_stats("gleu", r[0], r, s) for s, r in zip(srcs, refs, strict=True)]
    _, t_bs = timed(tm.paired_bootstrap, stats, fixed, "gleu", n_samples=1000)
    _, t_ar = timed(tm.paired_ar, stats, fixed, "gleu", n_samples=10000)
    a, b = tm.stats_matrix(stats), tm.stats_matrix(fixed)
    draws = np.random.default_rng(0).integers(0, len(a), (20, len(a)))
    _, t_loop = timed(lambda: [(tm.corpus_score("gleu", a[d]), tm.corpus_score("gleu", b[d])) for d in draws])
    t_loop *= 1000 / len(draws)
    print(f"  source vs reference 0: paired bootstrap (1000) {t_bs:.1f} s, a corpus_score loop "
          f"{t_loop:.1f} s (from {len(draws)}) -> x{t_loop / t_bs:.1f}; paired AR (10000) {t_ar:.1f} s")


def main():
    srcs, refs, name = e2e_corpus()
    print(f"corpus: {name}, {len(refs)} examples, {sum(map(len, refs))} references")
    bench_paired(refs)
    bench_multiboot(refs)
    bench_example_stats(system(refs, 0.3, 0), refs, srcs)
    bench_gleu()


if __name__ == "__main__":
    main()
