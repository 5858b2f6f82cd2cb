"""Across cells: a random-effects meta-analysis of the per-cell paired differences.

A study's comparison (typhoon vs random, say) is run in several cells (task x backbone: 6 in
the Typhoon design). Each cell i gives the mean paired difference ``y_i`` over its seeds and
its squared standard error ``v_i = sd_i**2 / n_i``. The model is ``y_i ~ N(mu + u_i, v_i)``
with ``u_i ~ N(0, tau2)``: the masker's effect may differ by cell (heterogeneity ``tau2``),
and ``mu`` is its average effect.

* ``tau2``: ``"dl"`` (DerSimonian-Laird moments), ``"pm"`` (Paule-Mandel: the generalised Q
  equals k - 1) or ``"reml"`` (restricted maximum likelihood, the default: it and PM are the
  recommended estimators; DL under-estimates tau2 with few cells).
* interval and p for ``mu``: with ``hksj=True`` (default) the Hartung-Knapp-Sidik-Jonkman
  interval, ``mu ± t(k-1) sqrt(q / sum w)`` with ``q`` the weighted residual mean square
  (untruncated); with ``hksj=False`` the normal (Wald) interval ``mu ± z sqrt(1 / sum w)``.
  With few cells only HKSJ holds its level: ``python -m analysis.across --coverage``
  measures it (README, "Across cells").
* ``i2``: Higgins' I² from the fixed-effect Q, ``max(0, (Q - (k-1)) / Q)``.
* prediction interval for the effect in a new cell (Higgins, Thompson & Spiegelhalter 2009):
  ``mu ± t(k-2) sqrt(tau2 + se**2)`` with the interval's ``se``; NaN below 3 cells.

Checked against ``statsmodels.stats.meta_analysis.combine_effects`` (DL, PM, HKSJ) and a
numerical maximisation of the restricted likelihood (REML) in tests/test_across.py.

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
    "treatment", "baseline", "n_cells", "estimate", "ci_low", "ci_high", "level", "p_val",
    "tau2", "i2", "pi_low", "pi_high", "method", "warning",
]
TAU2_METHODS = ("dl", "pm", "reml")


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


def reml_loglik(tau2: float, y: np.ndarray, v: np.ndarray) -> float:
    """Restricted log-likelihood of tau2 (up to a constant), mu profiled out."""
    w = 1 / (v + tau2)
    mu = np.sum(w * y) / np.sum(w)
    return float(-0.5 * (np.sum(np.log(v + tau2)) + np.log(np.sum(w))
                         + np.sum(w * (y - mu) ** 2)))


def tau2_reml(y: np.ndarray, v: np.ndarray, tol: float = 1e-12, max_iter: int = 1000) -> float:
    """REML estimate of tau2 by Fisher scoring (Viechtbauer 2005, eq. 12), truncated at 0.

    The scoring step is the fixed point ``tau2 = sum w²((y - mu)² - v) / sum w² + 1 / sum w``;
    started from the DL estimate it converges in a few steps on well-behaved data.
    """
    tau2 = tau2_dl(y, v)
    scale = max(float(np.max(v)), 1e-300)
    for _ in range(max_iter):
        w = 1 / (v + tau2)
        mu = np.sum(w * y) / np.sum(w)
        new = max(0.0, float(np.sum(w**2 * ((y - mu) ** 2 - v)) / np.sum(w**2) + 1 / np.sum(w)))
        if abs(new - tau2) <= tol * scale:
            return new
        tau2 = new
    # Scoring oscillates on rare data sets: maximise the restricted likelihood directly.
    hi = 10 * max(np.var(y, ddof=1), scale)
    res = optimize.minimize_scalar(lambda t: -reml_loglik(t, y, v), bounds=(0.0, hi),
                                   method="bounded", options={"xatol": tol * scale})
    return float(res.x)


TAU2 = {"dl": tau2_dl, "pm": tau2_pm, "reml": tau2_reml}


def random_effects(y, v, method: str = "reml", hksj: bool = True, level: float = 0.95) -> dict:
    """Random-effects summary of effects ``y`` (k,) with within-cell variances ``v`` (k,).

    Returns ``n_cells, estimate, se, ci_low, ci_high, p_val, tau2, i2, pi_low, pi_high``.
    One cell gives its own estimate and NaN for the rest.
    """
    if method not in TAU2:
        raise ValueError(f"method must be one of {list(TAU2_METHODS)}, got {method!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    y = np.asarray(y, dtype=float).ravel()
    v = np.asarray(v, dtype=float).ravel()
    if y.shape != v.shape or not (np.all(np.isfinite(y)) and np.all(v > 0)):
        raise ValueError("effects and variances must be finite, same length, variances > 0")
    k = y.size
    nan = np.nan
    out = dict(n_cells=k, estimate=nan, se=nan, ci_low=nan, ci_high=nan, p_val=nan, tau2=nan,
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
    if hksj:
        q = float(np.sum(w * (y - mu) ** 2)) / (k - 1)
        se = float(np.sqrt(q / np.sum(w)))
        dist = stats.t(k - 1)
    else:
        se = float(np.sqrt(1 / np.sum(w)))
        dist = stats.norm()
    crit = float(dist.ppf(1 - alpha / 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        p = float(2 * dist.sf(abs(mu / se))) if se > 0 else nan
    out.update(estimate=mu, se=se, ci_low=mu - crit * se, ci_high=mu + crit * se, p_val=p,
               tau2=tau2, i2=i2)
    if k >= 3:
        half = float(stats.t.ppf(1 - alpha / 2, k - 2)) * np.sqrt(tau2 + se**2)
        out.update(pi_low=mu - half, pi_high=mu + half)
    return out


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
    hksj: bool = True,
    level: float = 0.95,
    *,
    on_mismatch: str = "raise",
) -> pd.DataFrame:
    """One row per (treatment, baseline): the random-effects summary over task x model cells.

    ``runs`` and the comparisons as in :func:`analysis.compare` (pairing and its audit are
    :func:`analysis.audit.pair_runs`'). Columns ``COLUMNS``; ``method`` says the tau2
    estimator and the interval (``"reml+hksj"``, ``"dl+wald"``, ...).
    """
    if method not in TAU2:
        raise ValueError(f"method must be one of {list(TAU2_METHODS)}, got {method!r}")
    runs = check_runs(runs)
    pairs = resolve_comparisons(runs, baseline, comparisons)
    paired, _audit, _notes = pair_runs(runs, pairs, on_mismatch=on_mismatch)
    rows = []
    for treat, base in pairs:
        sel = paired[(paired["masker"] == treat) & (paired["baseline"] == base)]
        y, v, notes = cell_effects(sel)
        res = random_effects(y, v, method, hksj, level)
        res.pop("se")
        if res["n_cells"] < 2:
            notes.append(f"{res['n_cells']} usable cell(s): no across-cell inference")
        if notes:
            warn(f"across cells, {treat} vs {base}: " + "; ".join(notes))
        rows.append({"treatment": treat, "baseline": base, **res, "level": level,
                     "method": f"{method}+{'hksj' if hksj else 'wald'}",
                     "warning": "; ".join(notes)})
    return pd.DataFrame(rows, columns=COLUMNS)


def coverage_simulation(
    n_sim: int = 4000, k: int = 6, n_seeds: int = 5, tau: float = 0.0, sd: float = 0.01,
    level: float = 0.95, seed: int = 0,
) -> dict:
    """Coverage of ``mu`` by the DL-Wald and REML-HKSJ intervals (and DL-HKSJ, REML-Wald).

    Each simulated study has ``k`` cells; cell i's true effect is ``N(0, tau²)`` and its
    ``n_seeds`` paired differences are normal with sd ``sd * (0.5 .. 2)`` (cells differ in
    noise, as backbones do); ``y_i`` and ``v_i`` are estimated from them as in
    :func:`across_cells`. Returns ``{"dl+wald": coverage, ...}``.
    """
    rng = np.random.default_rng(seed)
    sds = sd * np.geomspace(0.5, 2.0, k)
    variants = [("dl", False), ("reml", True), ("dl", True), ("reml", False)]
    hits = dict.fromkeys((f"{m}+{'hksj' if h else 'wald'}" for m, h in variants), 0)
    for _ in range(n_sim):
        theta = rng.normal(0.0, tau, k) if tau > 0 else np.zeros(k)
        d = theta[:, None] + sds[:, None] * rng.standard_normal((k, n_seeds))
        y, v = d.mean(axis=1), d.var(axis=1, ddof=1) / n_seeds
        for m, h in variants:
            r = random_effects(y, v, m, h, level)
            hits[f"{m}+{'hksj' if h else 'wald'}"] += r["ci_low"] <= 0.0 <= r["ci_high"]
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
    print("| heterogeneity | DL, Wald (z) | REML, HKSJ (t) | DL, HKSJ | REML, Wald |")
    print("|---|---:|---:|---:|---:|")
    for label, tau in (("none (tau = 0)", 0.0), ("tau = 1 pt", 0.01), ("tau = 2 pts", 0.02)):
        c = coverage_simulation(args.n_sim, tau=tau, seed=args.seed)
        print(f"| {label} | {c['dl+wald']:.3f} | **{c['reml+hksj']:.3f}** | "
              f"{c['dl+hksj']:.3f} | {c['reml+wald']:.3f} |")


if __name__ == "__main__":
    _main()
