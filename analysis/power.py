"""Power of the two-sided paired t-test, minimum detectable effect, seeds needed.

Power uses the exact noncentral-t law (df = n - 1, noncentrality delta / sd * sqrt(n),
both rejection tails), the same formula as ``statsmodels.stats.power.TTestPower`` against
which the tests check it. Effects are in metric units (F1 0.83 -> a 0.5-point effect is
0.005); tables also show them in points (x100).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import optimize, stats

TARGET_POWER = 0.8
MAX_SEEDS = 10**7


def _upper_tail(crit, df, nc):
    """P(T > crit) for T ~ nct(df, nc), elementwise. scipy's nct returns NaN in some far
    tails (e.g. cdf(-2.7, 29, 8)); the mirrored form T(nc) = -T(-nc) usually survives, and
    a tail both forms lose is negligible, so the normal bound stands in for it."""
    crit, df, nc = np.broadcast_arrays(*map(lambda a: np.asarray(a, float), (crit, df, nc)))
    out = stats.nct.sf(crit, df, nc)
    bad = ~np.isfinite(out)
    if bad.any():
        out[bad] = stats.nct.cdf(-crit[bad], df[bad], -nc[bad])
        bad = ~np.isfinite(out)
        out[bad] = stats.norm.sf(crit[bad] - nc[bad])
    return np.clip(out, 0.0, 1.0)


def power_dz(dz, n, alpha: float = 0.05) -> np.ndarray:
    """Two-sided paired-t power for standardised effects ``dz`` and pair counts ``n``
    (broadcast arrays, n >= 2)."""
    n = np.asarray(n, dtype=float)
    dz = np.abs(np.asarray(dz, dtype=float))
    df = n - 1
    nc = dz * np.sqrt(n)
    crit = stats.t.isf(alpha / 2, df)
    return _upper_tail(crit, df, nc) + _upper_tail(crit, df, -nc)


def paired_power(effect: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t-test at level alpha for a true mean difference
    ``effect`` with paired-difference sd ``sd`` and ``n`` pairs. NaN if n < 2 or sd is not
    positive."""
    if n < 2 or not np.isfinite(sd) or sd <= 0 or not np.isfinite(effect):
        return np.nan
    return float(power_dz(abs(effect) / sd, n, alpha))


def mde(sd: float, n: int, alpha: float = 0.05, power: float = TARGET_POWER) -> float:
    """Smallest true mean difference (metric units) detected with ``power`` by the paired
    t-test with ``n`` pairs: the root in delta of ``paired_power(delta) = power``."""
    if n < 2 or not np.isfinite(sd) or sd <= 0:
        return np.nan
    # Standardised root, then scale: power depends on effect / sd only.
    f = lambda dz: float(power_dz(dz, n, alpha)) - power  # noqa: E731
    hi = 1.0
    while f(hi) < 0:
        hi *= 2
        if hi > 1e8:
            return np.nan
    dz = optimize.brentq(f, 0.0, hi, xtol=1e-14, rtol=1e-14, maxiter=500)
    return float(dz * sd)


def seeds_needed(
    effect: float, sd: float, alpha: float = 0.05, power: float = TARGET_POWER
) -> float:
    """Smallest number of seed pairs n >= 2 with paired-t power >= ``power`` for a true
    difference ``effect``. NaN when undefined (effect 0, sd not positive) or > MAX_SEEDS."""
    return float(seeds_needed_curve([effect], sd, alpha, power)[0])


def seeds_needed_curve(effects, sd: float, alpha: float = 0.05,
                       power: float = TARGET_POWER) -> np.ndarray:
    """:func:`seeds_needed` for an array of effects (E,) -> (E,), one noncentral-t call.

    Starts from the normal approximation with Guenther's z**2/2 correction, which lands
    within a step or two of the exact answer, evaluates a window of candidates at once and
    walks only when the answer falls outside it.
    """
    effects = np.abs(np.asarray(effects, dtype=float))
    out = np.full(effects.shape, np.nan)
    if not np.isfinite(sd) or sd <= 0:
        return out
    ok = np.isfinite(effects) & (effects > 0)
    dz = effects[ok] / sd
    za = stats.norm.isf(alpha / 2)
    z = za + stats.norm.ppf(power)
    approx = (z / dz) ** 2 + za**2 / 2
    res = np.full(dz.shape, np.nan)
    live = approx <= MAX_SEEDS
    start = np.maximum(2, np.floor(approx[live]) - 3)
    window = start[:, None] + np.arange(8)[None, :]
    reach = power_dz(dz[live, None], window, alpha) >= power
    found = reach.any(axis=1) & (~reach[:, 0] | (start == 2))
    res_live = np.where(found, window[np.arange(len(start)), reach.argmax(axis=1)], np.nan)
    for i in np.flatnonzero(~found):  # outside the window: walk (rare)
        res_live[i] = _walk(dz[live][i], int(start[i]), alpha, power)
    res[live] = res_live
    out[ok] = res
    return out


def _walk(dz: float, n: int, alpha: float, power: float) -> float:
    pw = lambda k: float(power_dz(dz, k, alpha))  # noqa: E731
    while pw(n) < power:
        n += 1
        if n > MAX_SEEDS:
            return np.nan
    while n > 2 and pw(n - 1) >= power:
        n -= 1
    return float(n)


def alpha_of(level) -> float:
    """The α a table's ``level`` was computed at: 1 - 0.95 is 0.050000000000000044 in floats,
    so round to 12 decimals, which gives back the α the user passed (0.05)."""
    return round(1.0 - float(level), 12)


def _label(effect: float) -> str:
    return f"{effect * 100:g} pt"


def power_table(
    table: pd.DataFrame,
    effects: Sequence[float] = (0.005, 0.01, 0.02),
    alpha: float | None = None,
    power: float = TARGET_POWER,
) -> pd.DataFrame:
    """Seeds needed for ``power`` against each effect and against the observed mean.

    ``table``: the output of :func:`analysis.compare` (uses ``sd``, ``n_pairs``,
    ``estimate`` and, when ``alpha`` is None, its ``level``). Returns one row per
    comparison x effect (``len(effects) + 1`` rows per comparison) with columns
    ``task, model, treatment, baseline, n_pairs, sd, effect_label, effect, effect_points,
    d_z, power_at_n, seeds_needed, alpha, target_power``.
    """
    rows = []
    for r in table.to_dict("records"):
        a = alpha if alpha is not None else alpha_of(r["level"])
        targets = [(_label(e), float(e)) for e in effects]
        targets.append(("observed", abs(float(r["estimate"]))))
        for label, eff in targets:
            sd = float(r["sd"])
            with np.errstate(divide="ignore", invalid="ignore"):
                dz = eff / sd if sd > 0 else np.nan
            rows.append(
                {
                    "task": r["task"], "model": r["model"], "treatment": r["treatment"],
                    "baseline": r["baseline"], "n_pairs": int(r["n_pairs"]), "sd": sd,
                    "effect_label": label, "effect": eff, "effect_points": eff * 100,
                    "d_z": dz, "power_at_n": paired_power(eff, sd, int(r["n_pairs"]), a),
                    "seeds_needed": seeds_needed(eff, sd, a, power),
                    "alpha": a, "target_power": power,
                }
            )
    out = pd.DataFrame(rows)
    if len(out):
        out["seeds_needed"] = out["seeds_needed"].astype("Int64")
    return out
