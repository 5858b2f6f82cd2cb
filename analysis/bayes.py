"""Bayesian reading of a comparison: P(better), P(within the margin), P(worse).

Per cell (task x backbone), from the seed-paired differences ``d`` (n,): under the standard
non-informative prior p(mu, sigma²) ∝ 1 / sigma² on normal differences, the posterior of the
mean difference mu is Student t with n - 1 degrees of freedom, location ``mean(d)`` and scale
``sd(d) / sqrt(n)`` (Gelman et al., BDA3 section 3.2). With ``rope`` r (the protocol's
``margin``, in metric units):

    p_better = P(mu > r),   p_rope = P(-r <= mu <= r),   p_worse = P(mu < -r).

"Better" means treatment - baseline > 0 (every metric here is higher-is-better). Without a
rope r = 0 and p_rope = 0. Fewer than 2 pairs give no posterior; zero-variance differences
(all zero -- typically collapsed runs -- or constant) would put the whole posterior on one
point and give a probability of 1 that no data can support: such cells are flagged
(``degenerate``) and get NaN, not 1.

Across cells (of one metric: cells whose tasks have different primary metrics are not
pooled, one across row per metric): the Bayesian signed-rank test of Benavoli et al. (2017, JMLR 18(77), "Time for
a change"), a Dirichlet-process posterior on the per-cell mean differences z_1..z_k with a
pseudo-observation at 0 of weight ``prior`` (0.5). For each posterior draw w ~ Dir(prior, 1,
.., 1), theta_right = sum_ij w_i w_j [z_i + z_j > 2r] (+1/2 on ties), theta_left likewise
below -2r, theta_rope the rest; p_better / p_rope / p_worse are the shares of draws in which
each is the largest. Monte Carlo from an explicit seed; checked against
``baycomp.SignedRankTest`` in tests/test_bayes.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from analysis._frames import check_runs, ordered_groups, resolve_comparisons, stable_rng, warn
from analysis.across import metric_of_tasks
from analysis.audit import pair_runs
from analysis.paired import is_degenerate

COLUMNS = [
    "scope", "task", "model", "treatment", "baseline", "metric", "n_pairs", "n_cells", "estimate",
    "rope", "p_better", "p_rope", "p_worse", "degenerate", "method", "warning",
]
N_SAMPLES = 50_000
PRIOR = 0.5  # weight of the pseudo-observation at 0 (Benavoli et al. 2017; baycomp's default)


def posterior_probs(d, rope: float = 0.0) -> dict:
    """``p_better, p_rope, p_worse`` of the mean difference under the non-informative prior.

    NaN when n < 2 or the differences have no spread (``degenerate`` True then).
    """
    d = np.asarray(d, dtype=float).ravel()
    n = d.size
    nan = dict(p_better=np.nan, p_rope=np.nan, p_worse=np.nan)
    if n < 2:
        return nan | {"degenerate": False}
    if is_degenerate(d):
        return nan | {"degenerate": True}
    post = stats.t(df=n - 1, loc=d.mean(), scale=d.std(ddof=1) / np.sqrt(n))
    better, worse = float(post.sf(rope)), float(post.cdf(-rope))
    # p_rope as a difference of cdfs, not 1 - the others: exact when the rope is narrow
    p_rope = float(post.cdf(rope) - post.cdf(-rope)) if rope > 0 else 0.0
    return {"p_better": better, "p_rope": p_rope, "p_worse": worse, "degenerate": False}


def signed_rank_probs(z, rope: float = 0.0, *, prior: float = PRIOR,
                      n_samples: int = N_SAMPLES, rng: np.random.Generator) -> dict:
    """Bayesian signed-rank test on per-cell differences ``z`` (k,): the posterior shares of
    draws where treatment is better / practically equivalent / worse."""
    z = np.asarray(z, dtype=float).ravel()
    zz = np.concatenate([[0.0], z])
    sums = zz[:, None] + zz[None, :]
    above = (sums > 2 * rope) + 0.5 * (sums == 2 * rope)
    below = (-sums > 2 * rope) + 0.5 * (-sums == 2 * rope)
    alpha = np.ones(zz.size)
    alpha[0] = prior
    counts = np.zeros(3)
    for start in range(0, n_samples, 10_000):  # chunks keep the (m, k+1) draws small
        w = rng.dirichlet(alpha, min(10_000, n_samples - start))
        right = np.einsum("si,ij,sj->s", w, above, w)
        left = np.einsum("si,ij,sj->s", w, below, w)
        if rope > 0:
            theta = np.stack([left, 1 - left - right, right], axis=1)
        else:  # no rope: the tie mass is split in `above`/`below`; compare left vs right only
            theta = np.stack([left, np.full_like(left, -np.inf), 1 - left], axis=1)
        counts += np.bincount(theta.argmax(axis=1), minlength=3)
    p = counts / n_samples
    return {"p_worse": float(p[0]), "p_rope": float(p[1]), "p_better": float(p[2])}


def bayes_paired(
    runs: pd.DataFrame,
    baseline: str | None = None,
    comparisons: Sequence[tuple[str, str]] | None = None,
    rope: float | None = None,
    *,
    n_samples: int = N_SAMPLES,
    prior: float = PRIOR,
    seed: int = 0,
    on_mismatch: str = "raise",
) -> pd.DataFrame:
    """Per cell and across cells: P(better), P(within ±rope), P(worse) for each comparison.

    ``runs`` and the comparisons as in :func:`analysis.compare`; ``rope`` is the margin in
    metric units (None: no rope). Returns ``COLUMNS``: rows with ``scope == "cell"`` (one per
    task x model x comparison; ``method`` ``"t_posterior"``) and then one ``scope ==
    "across"`` row per comparison and metric (``method`` ``"bayes_signed_rank"``, over the
    per-cell mean differences of the non-degenerate cells of that metric, Monte Carlo stream from ``seed`` and the
    comparison).
    """
    if rope is not None and not (np.isfinite(rope) and rope > 0):
        raise ValueError(f"rope must be a positive number in metric units, got {rope!r}")
    r = 0.0 if rope is None else float(rope)
    runs = check_runs(runs)
    pairs = resolve_comparisons(runs, baseline, comparisons)
    paired, _audit, _notes = pair_runs(runs, pairs, on_mismatch=on_mismatch)
    metric_of = metric_of_tasks(runs)
    cell_rows, across_rows = [], []
    for treat, base in pairs:
        sel = paired[(paired["masker"] == treat) & (paired["baseline"] == base)]
        means, left_out, n_pairs = {}, {}, {}  # metric -> per-cell means, cells left out, pairs
        for task, model in ordered_groups(sel, ["task", "model"]):
            d = sel.loc[(sel["task"] == task) & (sel["model"] == model), "diff"].to_numpy(float)
            metric = metric_of[task]
            res = posterior_probs(d, r)
            note = ""
            if d.size < 2:
                note = f"n_pairs={d.size}: no posterior"
            elif res["degenerate"]:
                note = "zero variance of the differences (typically collapsed runs): no posterior"
            means.setdefault(metric, [])
            n_pairs[metric] = n_pairs.get(metric, 0) + d.size
            if note:
                left_out.setdefault(metric, []).append(f"{task}/{model}")
            else:
                means[metric].append(d.mean())
            cell_rows.append({"scope": "cell", "task": task, "model": model, "treatment": treat,
                              "baseline": base, "metric": metric, "n_pairs": d.size,
                              "n_cells": 1, "estimate": d.mean() if d.size else np.nan,
                              "rope": r, **res, "method": "t_posterior", "warning": note})
        for metric, z in means.items():
            gone = left_out.get(metric, [])
            note = f"cells left out: {', '.join(gone)}" if gone else ""
            if gone:
                warn(f"Bayesian {treat} vs {base}: {len(gone)} cell(s) without a posterior "
                     f"(fewer than 2 pairs or zero variance): {', '.join(gone)}")
            probs = dict(p_better=np.nan, p_rope=np.nan, p_worse=np.nan)
            if z:
                # the stream of a one-metric study is the one it always had
                key = (treat, base) if len(means) == 1 else (treat, base, metric)
                probs = signed_rank_probs(z, r, prior=prior, n_samples=n_samples,
                                          rng=stable_rng(seed, "bayes-signed-rank", *key))
            across_rows.append({"scope": "across", "task": None, "model": None,
                                "treatment": treat, "baseline": base, "metric": metric,
                                "n_pairs": int(n_pairs[metric]), "n_cells": len(z),
                                "estimate": float(np.mean(z)) if z else np.nan, "rope": r,
                                **probs, "degenerate": False, "method": "bayes_signed_rank",
                                "warning": note})
    out = pd.DataFrame(cell_rows + across_rows, columns=COLUMNS)
    out["degenerate"] = out["degenerate"].astype(bool)
    return out
