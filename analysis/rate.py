"""Rate sweeps: the response of the metric to the masking rate, its optimum, and whether the
optimum moves with the model.

A sweep is a set of maskers of one kind that differ only in ``rate`` (the runs frame's
``sweep`` column: the kind and every other parameter, filled by ``study analyze``; ``rate``:
the masker's rate, 0 for the baseline ``none``). The baseline's runs are the rate-0 point.

**Per cell** (:func:`rate_response`): a linear mixed model ``value ~ rate + rate²`` with a
random intercept per seed (statsmodels ``MixedLM``, REML): the seed is shared by every rate
of a cell (same head initialisation and data order), so its effect is a block, not noise.
Quadratic by default: the question is an interior optimum, and three or more rates can show
one. When the fitted quadratic has no maximum inside the swept range (its vertex outside, or
it curves upward), the data call for a monotone response: the straight line ``value ~ rate``
is fitted instead (``curve`` = ``monotone``) and the optimum is the end of the range it rises
to -- a vertex extrapolated outside the sweep says nothing about a rate nobody ran.

``optimum`` (argmax of the fitted curve on [0, max rate]) and ``gain`` (fitted value at the
optimum minus at rate 0, i.e. over no masking) come with percentile intervals from a
parametric bootstrap of the fitted coefficients (``n_boot`` draws from their sampling law:
multivariate t with the within-seed residual degrees of freedom, so that the few seeds'
uncertainty in the noise variance is carried; Krinsky & Robb 1986). Each draw takes its own
optimum, so ``gain_low``/``gain_high`` include the selection of the rate. ``p_curvature``:
the t-test of the rate² coefficient.

**Across models** (:func:`rate_interaction`): does the response curve, and so the optimum,
differ between models? Per task and sweep, the F-test of the rate x model interaction
terms (``rate:model``, ``rate²:model``; 2 (M - 1) df) in the least-squares fit with a
block per model x seed -- exact for normal errors, where the mixed model's Wald test is
asymptotic and too liberal at 5 seeds; in a balanced design the two give the same
coefficients. With a numeric ``n_params`` column (models of one family), also the 2-df test
that the curve moves with log parameter count (``rate:log n``, ``rate²:log n``): the paper's
"larger models tolerate higher p".
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats

from analysis._frames import check_runs, ordered_groups, stable_rng, warn

RESPONSE_COLUMNS = [
    "task", "model", "sweep", "baseline", "metric", "n_seeds", "n_rates", "curve", "optimum",
    "optimum_low", "optimum_high", "gain", "gain_low", "gain_high", "p_curvature", "level",
    "method", "warning",
]
INTERACTION_COLUMNS = [
    "task", "sweep", "metric", "n_models", "term", "df_num", "df_den", "f_stat",
    "p_interaction", "method",
]
N_BOOT = 4000


def sweeps(runs: pd.DataFrame, baseline: str) -> dict[str, list[str]]:
    """sweep name -> its maskers (not the baseline), for groups with >= 2 distinct rates."""
    if "rate" not in runs.columns:
        return {}
    key = "sweep" if "sweep" in runs.columns else ("masker_kind" if "masker_kind" in runs.columns
                                                  else None)
    others = runs[(runs["masker"] != baseline) & np.isfinite(pd.to_numeric(
        runs["rate"], errors="coerce").astype(float))]
    groups = others.groupby(others[key] if key else pd.Series("rate", index=others.index),
                            sort=False)
    out = {}
    for name, g in groups:
        if g["rate"].nunique() >= 2:
            out[str(name)] = list(pd.unique(g["masker"]))
    return out


def _fit_mixed(df: pd.DataFrame, quadratic: bool):
    """(coefficients, covariance, residual df, fitted by) of value ~ rate [+ rate²] with a
    random intercept per seed (MixedLM, REML). Where MixedLM cannot fit (a singular Hessian:
    seeds that agree to the last digits, say), least squares with a block per seed gives the
    same coefficients in this balanced design, and its covariance."""
    import statsmodels.formula.api as smf

    formula = "value ~ rate + I(rate ** 2)" if quadratic else "value ~ rate"
    k = 3 if quadratic else 2
    df_resid = max(len(df) - df["seed"].nunique() - (k - 1), 1)
    try:
        with warnings.catch_warnings():
            # a seed variance at the boundary (0) is a legitimate estimate, not a failure
            warnings.simplefilter("ignore")
            fit = smf.mixedlm(formula, df, groups=df["seed"]).fit(reml=True,
                                                                  method=["lbfgs", "powell"])
        beta = np.asarray(fit.fe_params, dtype=float)
        cov = np.asarray(fit.cov_params(), dtype=float)[:k, :k]
        if np.all(np.isfinite(beta)) and np.all(np.isfinite(cov)):
            return beta, cov, df_resid, "MixedLM"
    except (np.linalg.LinAlgError, ValueError):
        pass
    r = df["rate"].to_numpy(float)
    curve = np.column_stack([r, r**2][: k - 1])
    seeds = pd.get_dummies(df["seed"]).to_numpy(float)
    x = np.hstack([seeds, curve])
    y = df["value"].to_numpy(float)
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    resid = y - x @ coef
    sigma2 = float(resid @ resid) / df_resid
    xtx_inv = np.linalg.pinv(x.T @ x)
    slope = slice(seeds.shape[1], None)
    # the intercept: the seeds' average level (only the slopes enter optimum and gain)
    beta = np.concatenate([[coef[: seeds.shape[1]].mean()], coef[slope]])
    cov = np.zeros((k, k))
    cov[1:, 1:] = sigma2 * xtx_inv[slope, slope]
    return beta, cov, df_resid, "seed-block least squares (MixedLM could not fit)"


def _optimum(beta: np.ndarray, rmax: float) -> tuple[np.ndarray, np.ndarray]:
    """argmax on [0, rmax] and the gain there over rate 0, for coefficient rows (B, 2|3)."""
    b1 = beta[:, 1]
    b2 = beta[:, 2] if beta.shape[1] > 2 else np.zeros(len(beta))
    with np.errstate(divide="ignore", invalid="ignore"):
        vertex = np.where(b2 < 0, -b1 / (2 * b2), np.nan)
    inside = np.isfinite(vertex) & (vertex > 0) & (vertex < rmax)
    end_gain = b1 * rmax + b2 * rmax**2
    opt = np.where(inside, vertex, np.where(end_gain > 0, rmax, 0.0))
    return opt, b1 * opt + b2 * opt**2


def _cell_response(df: pd.DataFrame, level: float, n_boot: int, shape: str, rng) -> dict:
    rmax = float(df["rate"].max())
    beta, cov, dfr, how = _fit_mixed(df, True)
    se2 = float(np.sqrt(cov[2, 2]))
    p_curv = float(2 * stats.t.sf(abs(beta[2] / se2), dfr)) if se2 > 0 else np.nan
    vertex_inside = beta[2] < 0 and 0 < -beta[1] / (2 * beta[2]) < rmax
    use = shape if shape != "auto" else ("quadratic" if vertex_inside else "monotone")
    if use == "monotone":
        beta, cov, dfr, how = _fit_mixed(df, False)
    grid = np.linspace(0.0, rmax, 101)
    powers = np.vander(grid, len(beta), increasing=True)  # 1, r, r²
    opt, gain = _optimum(beta[None, :], rmax)
    # parametric bootstrap of the coefficients: multivariate t with the residual df
    w, v = np.linalg.eigh(cov)
    root = v * np.sqrt(np.clip(w, 0, None))
    z = rng.standard_normal((n_boot, len(beta))) @ root.T
    draws = beta + z / np.sqrt(rng.chisquare(dfr, (n_boot, 1)) / dfr)
    b_opt, b_gain = _optimum(draws, rmax)
    a = (1 - level) / 2
    band = draws[:, 1:] @ powers[:, 1:].T  # the gain over rate 0: (n_boot, grid)
    curve = pd.DataFrame({"rate": grid, "fit": powers[:, 1:] @ beta[1:],
                          "fit_low": np.quantile(band, a, axis=0),
                          "fit_high": np.quantile(band, 1 - a, axis=0)})
    return {"curve": use, "_curve": curve, "_fitted_by": how, "optimum": float(opt[0]), "gain": float(gain[0]),
            "optimum_low": float(np.quantile(b_opt, a)),
            "optimum_high": float(np.quantile(b_opt, 1 - a)),
            "gain_low": float(np.quantile(b_gain, a)), "gain_high": float(np.quantile(b_gain, 1 - a)),
            "p_curvature": p_curv}


def _sweep_frames(runs: pd.DataFrame, baseline: str | None):
    runs = check_runs(runs)
    if "rate" not in runs.columns:
        raise ValueError("runs frame lacks column 'rate' (each masker's rate; `study analyze` "
                         "fills it from the protocol's maskers, baseline none = 0)")
    base = baseline if baseline is not None else "none"
    if base not in set(runs["masker"]):
        raise ValueError(f"baseline {base!r} not among the maskers {list(pd.unique(runs['masker']))}")
    runs = runs.assign(rate=pd.to_numeric(runs["rate"], errors="coerce").astype(float))
    base_rate = runs.loc[runs["masker"] == base, "rate"]
    if not (base_rate.fillna(0.0) == 0).all():
        raise ValueError(f"baseline {base!r} has rate {base_rate.iloc[0]!r}; a sweep's baseline "
                         "is the unmasked masker (rate 0)")
    runs.loc[runs["masker"] == base, "rate"] = 0.0
    for name, maskers in sweeps(runs, base).items():
        yield name, base, runs[runs["masker"].isin([base, *maskers])]


def rate_response(
    runs: pd.DataFrame,
    baseline: str | None = None,
    alpha: float = 0.05,
    *,
    shape: str = "auto",
    n_boot: int = N_BOOT,
    seed: int = 0,
    curves: bool = False,
):
    """Per (task, model, sweep): the fitted optimum rate and the gain there, with intervals at
    level 1 - alpha (module docstring). ``shape``: ``"auto"`` (quadratic unless the data call
    for monotone), ``"quadratic"`` or ``"monotone"``. Columns ``RESPONSE_COLUMNS``; empty when
    the runs hold no sweep. ``curves=True`` returns ``(table, curves)``, ``curves`` the fitted
    gain over rate 0 on a grid of rates with its pointwise bootstrap band (``task, model,
    sweep, rate, fit, fit_low, fit_high``) for the figure."""
    if shape not in ("auto", "quadratic", "monotone"):
        raise ValueError(f"shape must be 'auto', 'quadratic' or 'monotone', got {shape!r}")
    rows, fitted = [], []
    for name, base, sub in _sweep_frames(runs, baseline):
        for task, model in ordered_groups(sub, ["task", "model"]):
            cell = sub[(sub["task"] == task) & (sub["model"] == model)]
            # seeds with every rate: the block design the mixed model reads
            per_seed = cell.groupby("seed")["rate"].nunique()
            n_rates = int(cell["rate"].nunique())
            keep = per_seed[per_seed == n_rates].index
            notes = []
            if len(keep) < len(per_seed):
                notes.append(f"seed(s) {sorted(set(per_seed.index) - set(keep))} left out: "
                             "not every rate ran")
            cell = cell[cell["seed"].isin(keep)]
            metric = cell["metric"].iloc[0] if "metric" in cell and len(cell) else None
            row = {"task": task, "model": model, "sweep": name, "baseline": base,
                   "metric": metric, "n_seeds": len(keep), "n_rates": n_rates,
                   "level": 1 - alpha, "method": "MixedLM (seed random intercept, REML); "
                   "optimum and gain: parametric bootstrap of the coefficients"}
            if n_rates < 3 or len(keep) < 2:
                notes.append(f"{n_rates} rate(s) x {len(keep)} seed(s): no response curve "
                             "(needs 3 rates and 2 seeds)")
                rows.append(row | {"warning": "; ".join(notes)})
                continue
            rng = stable_rng(seed, "rate-response", task, model, name)
            res = _cell_response(cell, 1 - alpha, n_boot, shape, rng)
            fitted.append(res.pop("_curve").assign(task=task, model=model, sweep=name))
            how = res.pop("_fitted_by")
            if how != "MixedLM":
                row["method"] = row["method"].replace("MixedLM (seed random intercept, REML)", how)
                notes.append("MixedLM could not fit: seed-block least squares")
            rows.append(row | res | {"warning": "; ".join(notes)})
            if notes:
                warn(f"rate response {task}/{model} ({name}): " + "; ".join(notes))
    table = pd.DataFrame(rows, columns=RESPONSE_COLUMNS)
    if not curves:
        return table
    cols = ["task", "model", "sweep", "rate", "fit", "fit_low", "fit_high"]
    return table, (pd.concat(fitted, ignore_index=True)[cols] if fitted
                   else pd.DataFrame(columns=cols))


def _f_test(y, x_small, x_big) -> tuple[float, int, int, float]:
    def rss_rank(x):
        coef, _, rank, _ = np.linalg.lstsq(x, y, rcond=None)
        r = y - x @ coef
        return float(r @ r), int(rank)

    rss0, r0 = rss_rank(x_small)
    rss1, r1 = rss_rank(x_big)
    df_num, df_den = r1 - r0, len(y) - r1
    if df_num <= 0 or df_den <= 0 or rss1 <= 0:
        return np.nan, df_num, df_den, np.nan
    f = ((rss0 - rss1) / df_num) / (rss1 / df_den)
    return float(f), df_num, df_den, float(stats.f.sf(f, df_num, df_den))


def rate_interaction(runs: pd.DataFrame, baseline: str | None = None) -> pd.DataFrame:
    """Per (task, sweep) run on >= 2 models: the F-test that the rate response differs by
    model (``term`` ``rate x model``) and, with a numeric ``n_params`` column, that it moves
    with log parameter count (``rate x log n_params``). Columns ``INTERACTION_COLUMNS``."""
    rows = []
    for name, _base, sub in _sweep_frames(runs, baseline):
        for (task,) in ordered_groups(sub, ["task"]):
            d = sub[sub["task"] == task]
            models = list(pd.unique(d["model"]))
            if len(models) < 2 or d["rate"].nunique() < 3:
                continue
            y = d["value"].to_numpy(float)
            r = d["rate"].to_numpy(float)
            blocks = pd.get_dummies(d["model"].astype(str) + "\x1f" + d["seed"].astype(str)
                                    ).to_numpy(float)
            curve = np.column_stack([r, r**2])
            small = np.hstack([blocks, curve])
            onehot = pd.get_dummies(d["model"].astype(str)).to_numpy(float)[:, 1:]
            inter = np.hstack([onehot * r[:, None], onehot * (r**2)[:, None]])
            metric = d["metric"].iloc[0] if "metric" in d else None
            common = {"task": task, "sweep": name, "metric": metric, "n_models": len(models)}
            f, dn, dd, p = _f_test(y, small, np.hstack([small, inter]))
            rows.append(common | {"term": "rate x model", "df_num": dn, "df_den": dd, "f_stat": f,
                                  "p_interaction": p, "method": "F-test, model x seed blocks"})
            size = pd.to_numeric(d.get("n_params", pd.Series(np.nan, index=d.index)),
                                 errors="coerce").to_numpy(float)
            if np.all(np.isfinite(size)) and len(np.unique(size)) >= 2:
                logn = np.log(size) - np.log(size).mean()
                trend = np.column_stack([r * logn, r**2 * logn])
                f, dn, dd, p = _f_test(y, small, np.hstack([small, trend]))
                rows.append(common | {"term": "rate x log n_params", "df_num": dn, "df_den": dd,
                                      "f_stat": f, "p_interaction": p,
                                      "method": "F-test, model x seed blocks"})
    return pd.DataFrame(rows, columns=INTERACTION_COLUMNS)
