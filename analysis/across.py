"""Across cells: a random-effects meta-analysis of the per-cell paired differences.

A study's comparison (typhoon vs random, say) is run in several cells (task x backbone: 6 in
the Typhoon design). Each cell i gives the mean paired difference ``y_i`` over its seeds and
its squared standard error ``v_i = sd_i**2 / n_i``. The model is ``y_i ~ N(mu + u_i, v_i)``
with ``u_i ~ N(0, tau2)``: the masker's effect may differ by cell (heterogeneity ``tau2``),
and ``mu`` is its average effect.

* Only cells that share a metric are pooled: a difference in macro-F1 points and one in
  weighted-F1 points are not the same quantity. ``across_cells`` gives one row per
  (comparison, metric), and its ``metric`` column names the metric of all its cells.
* ``tau2``: ``"dl"`` (DerSimonian-Laird moments), ``"pm"`` (Paule-Mandel: the generalised Q
  equals k - 1) or ``"reml"`` (restricted maximum likelihood, the default: it and PM are the
  recommended estimators; DL under-estimates tau2 with few cells). REML is the global
  maximum of the restricted likelihood on [0, inf): a log-spaced grid brackets the best
  point (the boundary tau2 = 0 included) before Brent's method refines it. Fisher scoring
  from the DL start, used before, stops at a local maximum on about 1 data set in 500.
* interval and p for ``mu`` (``interval``): ``"mhksj"`` (default) the *modified*
  Hartung-Knapp-Sidik-Jonkman interval ``mu ± t(k-1) sqrt(max(1, q) / sum w)`` with ``q`` the
  weighted residual mean square (Röver, Knapp & Friede 2015, BMC Med Res Methodol 15:99;
  metafor's ``test="adhoc"``). The plain HKSJ interval (``"hksj"``, q untruncated) collapses
  when the cells agree more closely than their standard errors say (q -> 0: three cells with
  identical differences gave a zero-width interval and p ~ 1e-30); ``max(1, q)`` keeps it at
  least as wide as the Wald interval with t quantiles, so it never collapses. ``"wald"``: the
  normal interval ``mu ± z sqrt(1 / sum w)``. With few cells only (m)HKSJ holds its level:
  ``python -m analysis.across --coverage`` measures it (README, "Across cells").
* ``i2``: Higgins' I² from the fixed-effect Q, ``max(0, (Q - (k-1)) / Q)``.
* prediction interval for the effect in a new cell (Higgins, Thompson & Spiegelhalter 2009):
  ``mu ± t(k-2) sqrt(tau2 + se**2)`` with the interval's ``se``; NaN below 3 cells.

Checked against ``statsmodels.stats.meta_analysis.combine_effects`` (DL, PM, HKSJ), a dense
grid of the restricted likelihood (REML) and hand-computed modified HKSJ in
tests/test_across.py.

Cells with fewer than 2 pairs (no standard error) or with zero-variance differences (a zero
standard error would take all the weight: typically collapsed runs) are left out and named
in the row's ``warning``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import optimize, stats

from analysis._frames import check_runs, ordered_groups, resolve_comparisons, warn
from analysis.audit import pair_runs
from analysis.paired import is_degenerate

COLUMNS = [
    "treatment", "baseline", "metric", "n_cells", "estimate", "ci_low", "ci_high", "level",
    "p_hksj", "tau2", "i2", "pi_low", "pi_high", "method", "warning",
]
TAU2_METHODS = ("dl", "pm", "reml")
INTERVALS = ("mhksj", "hksj", "wald")


def tau2_dl(y: np.ndarray, v: np.ndarray) -> float:
    """DerSimonian-Laird moment estimate of tau2, truncated at 0."""
    w = 1 / v
    mu = np.sum(w * y) / np.sum(w)
    q = np.sum(w * (y - mu) ** 2)
    c = np.sum(w) - np.sum(w**2) / np.sum(w)
    return float(max(0.0, (q - (y.size - 1)) / c))


def _gen_q(tau2: float, y: np.ndarray, v: np.ndarray) -> float:
    w = 1 / (v + tau2)
    mu = np.sum(w * y) / np.sum(w)
    return float(np.sum(w * (y - mu) ** 2))


def tau2_pm(y: np.ndarray, v: np.ndarray) -> float:
    """Paule-Mandel: the tau2 >= 0 at which the generalised Q statistic equals k - 1."""
    k = y.size
    f = lambda t: _gen_q(t, y, v) - (k - 1)  # noqa: E731  (decreasing in t)
    if f(0.0) <= 0:
        return 0.0
    hi = max(np.var(y, ddof=1), np.max(v))
    while f(hi) > 0:
        hi *= 2
    return float(optimize.brentq(f, 0.0, hi, xtol=1e-14 * hi, rtol=1e-12, maxiter=500))


def reml_loglik(tau2, y: np.ndarray, v: np.ndarray):
    """Restricted log-likelihood of tau2 (up to a constant), mu profiled out; ``tau2`` a
    number or an array of them."""
    t = np.asarray(tau2, dtype=float)
    w = 1 / (v + t[..., None])
    sw = w.sum(axis=-1)
    mu = (w * y).sum(axis=-1) / sw
    ll = -0.5 * (np.log(v + t[..., None]).sum(axis=-1) + np.log(sw)
                 + (w * (y - mu[..., None]) ** 2).sum(axis=-1))
    return float(ll) if ll.ndim == 0 else ll


def tau2_reml(y: np.ndarray, v: np.ndarray, n_grid: int = 400) -> float:
    """REML estimate of tau2: the global maximum of the restricted likelihood on [0, inf).

    The likelihood can have several local maxima (scoring from a moment start stops at the
    nearest one). So: evaluate it at 0 and on a log-spaced grid up to a bound beyond which
    it only falls (extended while the best point is the last), bracket the best grid point by
    its neighbours, refine there with Brent's method, and keep the boundary 0 when it is at
    least as high as the refined interior point.
    """
    scale = max(float(np.max(v)), float(np.var(y)), 1e-300)
    hi = 10 * (float(np.ptp(y)) ** 2 + scale)
    while True:
        grid = np.concatenate([[0.0], np.geomspace(1e-10 * scale, hi, n_grid)])
        ll = reml_loglik(grid, y, v)
        i = int(np.argmax(ll))
        if i < grid.size - 1:
            break
        hi *= 100
    lo_b, hi_b = grid[max(i - 1, 0)], grid[i + 1]
    res = optimize.minimize_scalar(lambda t: -reml_loglik(t, y, v), bounds=(lo_b, hi_b),
                                   method="bounded", options={"xatol": 1e-13 * scale})
    best, best_ll = (float(res.x), -float(res.fun)) if -res.fun > ll[i] else (grid[i], ll[i])
    return 0.0 if reml_loglik(0.0, y, v) >= best_ll else float(best)


TAU2 = {"dl": tau2_dl, "pm": tau2_pm, "reml": tau2_reml}


def random_effects(y, v, method: str = "reml", interval: str = "mhksj",
                   level: float = 0.95) -> dict:
    """Random-effects summary of effects ``y`` (k,) with within-cell variances ``v`` (k,).

    ``interval``: ``"mhksj"`` (modified HKSJ, max(1, q)), ``"hksj"`` (q untruncated) or
    ``"wald"``. Returns ``n_cells, estimate, se, ci_low, ci_high, p, tau2, i2, pi_low,
    pi_high`` (``p`` two-sided, from the interval's t or z). One cell gives its own estimate
    and NaN for the rest.
    """
    if method not in TAU2:
        raise ValueError(f"method must be one of {list(TAU2_METHODS)}, got {method!r}")
    if interval not in INTERVALS:
        raise ValueError(f"interval must be one of {list(INTERVALS)}, got {interval!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    y = np.asarray(y, dtype=float).ravel()
    v = np.asarray(v, dtype=float).ravel()
    if y.shape != v.shape or not (np.all(np.isfinite(y)) and np.all(v > 0)):
        raise ValueError("effects and variances must be finite, same length, variances > 0")
    k = y.size
    nan = np.nan
    out = dict(n_cells=k, estimate=nan, se=nan, ci_low=nan, ci_high=nan, p=nan, tau2=nan,
               i2=nan, pi_low=nan, pi_high=nan)
    if k == 0:
        return out
    if k == 1:
        return out | {"estimate": float(y[0])}
    w_fe = 1 / v
    q_fe = float(np.sum(w_fe * (y - np.sum(w_fe * y) / np.sum(w_fe)) ** 2))
    i2 = max(0.0, (q_fe - (k - 1)) / q_fe) if q_fe > 0 else 0.0
    tau2 = TAU2[method](y, v)
    w = 1 / (v + tau2)
    mu = float(np.sum(w * y) / np.sum(w))
    alpha = 1 - level
    if interval == "wald":
        se = float(np.sqrt(1 / np.sum(w)))
        dist = stats.norm()
    else:
        q = float(np.sum(w * (y - mu) ** 2)) / (k - 1)
        se = float(np.sqrt((max(1.0, q) if interval == "mhksj" else q) / np.sum(w)))
        dist = stats.t(k - 1)
    crit = float(dist.ppf(1 - alpha / 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        p = float(2 * dist.sf(abs(mu / se))) if se > 0 else nan
    out.update(estimate=mu, se=se, ci_low=mu - crit * se, ci_high=mu + crit * se, p=p,
               tau2=tau2, i2=i2)
    if k >= 3:
        half = float(stats.t.ppf(1 - alpha / 2, k - 2)) * np.sqrt(tau2 + se**2)
        out.update(pi_low=mu - half, pi_high=mu + half)
    return out


def metric_of_tasks(runs: pd.DataFrame) -> dict:
    """task -> its primary metric (None when the runs frame has no ``metric`` column)."""
    if "metric" not in runs.columns:
        return dict.fromkeys(runs["task"].unique())
    first = runs.groupby("task", sort=False)["metric"].first()
    return {t: (None if pd.isna(m) else str(m)) for t, m in first.items()}


def cell_effects(paired: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Per-cell mean paired difference and its squared standard error for one comparison.

    ``paired``: :func:`analysis.audit.pair_runs` rows of one (treatment, baseline). Returns
    ``(y, v, notes)``; cells that cannot enter the meta-analysis are named in ``notes``.
    """
    ys, vs, notes = [], [], []
    for task, model in ordered_groups(paired, ["task", "model"]):
        d = paired.loc[(paired["task"] == task) & (paired["model"] == model), "diff"]
        d = d.to_numpy(dtype=float)
        if d.size < 2:
            notes.append(f"{task}/{model} left out: {d.size} pair(s), no standard error")
        elif is_degenerate(d):
            notes.append(f"{task}/{model} left out: zero variance of the differences "
                         "(typically collapsed runs)")
        else:
            ys.append(d.mean())
            vs.append(d.var(ddof=1) / d.size)
    return np.array(ys), np.array(vs), notes


def across_cells(
    runs: pd.DataFrame,
    baseline: str | None = None,
    comparisons: Sequence[tuple[str, str]] | None = None,
    method: str = "reml",
    level: float = 0.95,
    *,
    interval: str = "mhksj",
    on_mismatch: str = "raise",
) -> pd.DataFrame:
    """One row per (treatment, baseline, metric): the random-effects summary over the task x
    model cells whose task has that primary metric.

    ``runs`` and the comparisons as in :func:`analysis.compare` (pairing and its audit are
    :func:`analysis.audit.pair_runs`'). Columns ``COLUMNS``; ``method`` says the tau2
    estimator and the interval (``"reml+mhksj"``, ``"dl+wald"``, ...); ``p_hksj`` is the
    two-sided p of the (modified) HKSJ t test (of the Wald z test with ``interval="wald"``).
    """
    if method not in TAU2:
        raise ValueError(f"method must be one of {list(TAU2_METHODS)}, got {method!r}")
    runs = check_runs(runs)
    pairs = resolve_comparisons(runs, baseline, comparisons)
    paired, _audit, _notes = pair_runs(runs, pairs, on_mismatch=on_mismatch)
    metric_of = metric_of_tasks(runs)
    paired["metric"] = paired["task"].map(metric_of)
    rows = []
    for treat, base in pairs:
        sel = paired[(paired["masker"] == treat) & (paired["baseline"] == base)]
        for metric in pd.unique(sel["metric"]):
            same = sel[sel["metric"].isna()] if metric is None else sel[sel["metric"] == metric]
            y, v, notes = cell_effects(same)
            res = random_effects(y, v, method, interval, level)
            res.pop("se")
            p = res.pop("p")
            if res["n_cells"] < 2:
                notes.append(f"{res['n_cells']} usable cell(s): no across-cell inference")
            if notes:
                what = f" ({metric})" if metric is not None else ""
                warn(f"across cells, {treat} vs {base}{what}: " + "; ".join(notes))
            rows.append({"treatment": treat, "baseline": base, "metric": metric, **res,
                         "p_hksj": p, "level": level, "method": f"{method}+{interval}",
                         "warning": "; ".join(notes)})
    return pd.DataFrame(rows, columns=COLUMNS)


VARIANTS = [("dl", "wald"), ("reml", "mhksj"), ("reml", "hksj"), ("dl", "hksj"), ("reml", "wald")]


def coverage_simulation(
    n_sim: int = 4000, k: int = 6, n_seeds: int = 5, tau: float = 0.0, sd: float = 0.01,
    level: float = 0.95, seed: int = 0,
) -> dict:
    """Coverage of ``mu`` by the intervals of ``VARIANTS`` (tau2 estimator + interval).

    Each simulated study has ``k`` cells; cell i's true effect is ``N(0, tau²)`` and its
    ``n_seeds`` paired differences are normal with sd ``sd * (0.5 .. 2)`` (cells differ in
    noise, as backbones do); ``y_i`` and ``v_i`` are estimated from them as in
    :func:`across_cells`. Returns ``{"dl+wald": coverage, ...}``.
    """
    rng = np.random.default_rng(seed)
    sds = sd * np.geomspace(0.5, 2.0, k)
    hits = dict.fromkeys((f"{m}+{i}" for m, i in VARIANTS), 0)
    for _ in range(n_sim):
        theta = rng.normal(0.0, tau, k) if tau > 0 else np.zeros(k)
        d = theta[:, None] + sds[:, None] * rng.standard_normal((k, n_seeds))
        y, v = d.mean(axis=1), d.var(axis=1, ddof=1) / n_seeds
        for m, i in VARIANTS:
            r = random_effects(y, v, m, i, level)
            hits[f"{m}+{i}"] += r["ci_low"] <= 0.0 <= r["ci_high"]
    return {name: h / n_sim for name, h in hits.items()}


def _main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m analysis.across")
    ap.add_argument("--coverage", action="store_true", help="coverage table (README)")
    ap.add_argument("--n-sim", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if not args.coverage:
        ap.error("nothing to do: pass --coverage")
    print(f"coverage of nominal 95 % intervals for mu, k = 6 cells x 5 seeds, sd of differences 0.5-2 pts,"
          f" {args.n_sim} simulated studies (seed {args.seed})")
    print("| heterogeneity | DL, Wald (z) | REML, modified HKSJ (t) | REML, HKSJ | DL, HKSJ "
          "| REML, Wald |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, tau in (("none (tau = 0)", 0.0), ("tau = 1 pt", 0.01), ("tau = 2 pts", 0.02)):
        c = coverage_simulation(args.n_sim, tau=tau, seed=args.seed)
        print(f"| {label} | {c['dl+wald']:.3f} | **{c['reml+mhksj']:.3f}** | "
              f"{c['reml+hksj']:.3f} | {c['dl+hksj']:.3f} | {c['reml+wald']:.3f} |")


if __name__ == "__main__":
    _main()
