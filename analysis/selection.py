"""Several treatments against one baseline in a cell: simultaneous inference and the best.

:func:`many_to_one` (max-T, Westfall-Young step-down, Holm beside them) answers "which of
these treatments differ from the baseline?" with the family-wise error held over the
treatments of the cell; :func:`best` answers "which treatment is best, and by how much does it
beat the baseline?" without the optimism of picking the winner on the same data.

**max-T by joint sign flips.** In a cell, seed i gives one difference per treatment,
``D[i, j] = treatment_j - baseline``. Under the null of no effect of any treatment the
seed's vector of differences is symmetric about 0, so flipping its sign -- all treatments at
once, which keeps their correlation (they share the seed's baseline run) -- leaves the joint
law unchanged. Each of the 2^n sign patterns gives the paired t statistics of every
treatment; ``p_maxt`` (single step) is the share of patterns whose largest |t| reaches the
treatment's observed |t|; ``p_adj`` is the Westfall-Young step-down version (free step-down
resampling: the k-th largest observed |t| is compared with the maximum over the treatments
not yet rejected, then made monotone). Exact enumeration up to 2^16 patterns (16 seeds),
``n_mc`` Monte Carlo patterns beyond (``method`` says which). ``p_holm`` is Holm's step-down
on the per-treatment paired t-tests: it ignores the correlation, so it is never less
conservative than ``p_adj`` in large samples; both are shown.

With n seeds the sign-flip p cannot go below 2 / 2^n (0.0625 at 5 seeds): max-T needs 6 seeds
or more to reject anything at 0.05.

**Simultaneous intervals.** ``ci_low``/``ci_high``: ``estimate ± c * se`` with ``c`` the
(1 - alpha) quantile of max_j |t_j| for normal seed differences with the cell's estimated
covariance (simulated, ``n_sim`` draws, a fixed stream): Dunnett's many-to-one interval with
the correlation taken from the data, the parametric counterpart of max-T. With one
treatment ``c`` is the t quantile. The intervals hold jointly, so they stay valid for
whichever treatment one picks afterwards -- :func:`best` uses them as the selection-adjusted
gain.

**The best treatment: Hsu's multiple comparisons with the best (MCB).** Chosen over a rank
confidence set because the question is "which could be best?", not a full ranking: MCB
gives exactly the set of maskers not shown worse than the best at level alpha, with
intervals for each one's gap to the best of the others, and with few seeds it is sharper
than rank sets, which must bound every pairwise order. Masker i (the baseline included: "no
masking" can be the best choice) stays in the set unless some other masker beats it
significantly: ``mean_j - mean_i > d_i * se_ij`` for some j, with se_ij the standard error of
the paired differences j - i and d_i the one-sided (1 - alpha) quantile of max_j t_ji
(simulated as above). The set contains the true best with probability >= 1 - alpha
(Hsu 1984; Edwards & Hsu 1983). Checked by simulation in tests/test_selection.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from analysis._frames import check_runs, ordered_groups, resolve_comparisons, stable_rng, warn
from analysis.paired import holm

MAX_EXACT_SEEDS = 16  # 2^16 sign patterns
N_MC = 100_000
N_SIM = 50_000
MANY_TO_ONE_COLUMNS = [
    "task", "model", "treatment", "baseline", "estimate", "ci_low", "ci_high", "level",
    "p_maxt", "p_adj", "p_holm", "n_pairs", "method", "warning",
]
BEST_COLUMNS = [
    "task", "model", "treatment", "baseline", "estimate", "in_best_set", "apparent_best",
    "mcb_low", "mcb_high", "naive_low", "naive_high", "ci_low", "ci_high", "level", "n_pairs",
    "method",
]


# -- the statistics ------------------------------------------------------------------------


def t_stats(d: np.ndarray) -> np.ndarray:
    """Paired t statistic of every column of ``d`` (n, m). Zero spread: ±inf, 0 for 0/0."""
    n = d.shape[0]
    mean = d.mean(axis=0)
    var = d.var(axis=0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = mean / np.sqrt(var / n)
        return np.where(var > 0, t, np.where(mean == 0, 0.0, np.sign(mean) * np.inf))


def sign_patterns(n: int, n_mc: int, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """All 2^n sign patterns (n <= MAX_EXACT_SEEDS, exact) or ``n_mc`` random ones."""
    if n <= MAX_EXACT_SEEDS:
        bits = (np.arange(2**n)[:, None] >> np.arange(n)[None, :]) & 1
        return 1.0 - 2.0 * bits, True
    return rng.choice([-1.0, 1.0], size=(n_mc, n)), False


def flipped_t(d: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """|t| of every column of ``d`` (n, m) under every sign pattern (P, n): (P, m).

    A flip leaves every sum of squares unchanged, so only the means need the patterns."""
    n = d.shape[0]
    mean = signs @ d / n
    ss = (d**2).sum(axis=0)
    var = (ss - n * mean**2) / (n - 1)
    var = np.where(var > 1e-15 * np.maximum(ss, 1e-300), var, 0.0)  # float noise of 0
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.abs(mean) / np.sqrt(var / n)
    return np.where(var > 0, t, np.where(mean == 0, 0.0, np.inf))


def maxt_pvalues(d: np.ndarray, n_mc: int = N_MC, rng: np.random.Generator | None = None
                 ) -> tuple[np.ndarray, np.ndarray, bool, int]:
    """(p_maxt, p_stepdown, exact, n_patterns) for the columns of ``d`` (n, m)."""
    rng = rng if rng is not None else np.random.default_rng(0)
    n, m = d.shape
    signs, exact = sign_patterns(n, n_mc, rng)
    t_null = flipped_t(d, signs)  # (P, m)
    t_obs = np.abs(t_stats(d))
    tol = 1e-9 * np.maximum(1.0, np.where(np.isfinite(t_obs), t_obs, 1.0))
    reach = lambda tmax, t, k: (tmax >= t - k)  # noqa: E731  (ties count: exact p)

    def share(hits: np.ndarray) -> float:
        # exact: the observed pattern is among the 2^n; Monte Carlo: add it (p never 0)
        return float(hits.mean()) if exact else float((hits.sum() + 1) / (hits.size + 1))

    tmax = t_null.max(axis=1)
    single = np.array([share(reach(tmax, t_obs[j], tol[j])) for j in range(m)])
    order = np.argsort(-t_obs, kind="stable")
    step = np.empty(m)
    running = 0.0
    for k, j in enumerate(order):
        rest = t_null[:, order[k:]].max(axis=1)
        running = max(running, share(reach(rest, t_obs[j], tol[j])))
        step[j] = running
    return single, step, exact, signs.shape[0]


def simultaneous_crit(d: np.ndarray, level: float, two_sided: bool = True, n_sim: int = N_SIM,
                      rng: np.random.Generator | None = None) -> float:
    """The ``level`` quantile of max_j |t_j| (or max_j t_j, one-sided) of n normal seed vectors
    with the covariance of ``d`` (n, m): simulated paired t statistics, ``n_sim`` draws."""
    rng = rng if rng is not None else np.random.default_rng(0)
    n = d.shape[0]
    # a column without spread (collapsed runs) has se 0: its interval is a point whatever the
    # critical value, so the family is the columns that vary
    d = d[:, d.std(axis=0, ddof=1) > 0] if n >= 2 else d
    m = d.shape[1]
    if m <= 1:
        return float(stats.t.ppf(level if not two_sided else 1 - (1 - level) / 2, n - 1))
    cov = np.cov(d, rowvar=False, ddof=1)
    sd = np.sqrt(np.diag(cov))
    corr = cov / np.outer(sd, sd)
    w, v = np.linalg.eigh(corr)
    root = v * np.sqrt(np.clip(w, 0, None))
    out = []
    for start in range(0, n_sim, 5000):  # chunks keep (draws, n, m) small
        z = rng.standard_normal((min(5000, n_sim - start), n, m)) @ root.T
        t = z.mean(axis=1) / (z.std(axis=1, ddof=1) / np.sqrt(n))
        out.append(np.abs(t).max(axis=1) if two_sided else t.max(axis=1))
    return float(np.quantile(np.concatenate(out), level))


# -- the tables ----------------------------------------------------------------------------


def _cell_matrix(runs: pd.DataFrame, task, model, maskers: Sequence[str]
                 ) -> tuple[np.ndarray, list, str]:
    """Scores (n_seeds, len(maskers)) of the seeds every masker ran in the cell; a note on
    the seeds left out."""
    cell = runs[(runs["task"] == task) & (runs["model"] == model) & runs["masker"].isin(maskers)]
    wide = cell.pivot(index="seed", columns="masker", values="value").reindex(columns=maskers)
    full = wide.dropna()
    note = ""
    if len(full) < len(wide):
        gone = sorted(set(wide.index) - set(full.index))
        note = f"seed(s) {gone} left out: not every masker ran them"
    return full.to_numpy(dtype=float), list(full.index), note


def _treatments_by_baseline(runs, baseline, treatments):
    pairs = resolve_comparisons(runs, baseline, None)
    base = pairs[0][1]
    names = [t for t, _ in pairs]
    if treatments is not None:
        unknown = [t for t in treatments if t not in names]
        if unknown:
            raise ValueError(f"treatment(s) {unknown} not among the maskers {names}")
        names = [t for t in names if t in treatments]
    return base, names


def many_to_one(
    runs: pd.DataFrame,
    baseline: str | None = None,
    alpha: float = 0.05,
    *,
    treatments: Sequence[str] | None = None,
    n_mc: int = N_MC,
    n_sim: int = N_SIM,
    seed: int = 0,
) -> pd.DataFrame:
    """Every treatment against ``baseline`` per task x model cell, with the family-wise
    error held over the cell's treatments (module docstring). One row per (task, model,
    treatment); columns ``MANY_TO_ONE_COLUMNS``. Only seeds every masker of the cell ran
    are used (the joint sign flip needs them all)."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    runs = check_runs(runs)
    base, names = _treatments_by_baseline(runs, baseline, treatments)
    rows = []
    for task, model in ordered_groups(runs, ["task", "model"]):
        present = set(runs.loc[(runs["task"] == task) & (runs["model"] == model), "masker"])
        treat = [t for t in names if t in present]
        if base not in present or not treat:
            continue
        scores, _seeds, note = _cell_matrix(runs, task, model, [base, *treat])
        d = scores[:, 1:] - scores[:, :1]
        n, m = d.shape
        est = d.mean(axis=0) if n else np.full(m, np.nan)
        nan = np.full(m, np.nan)
        p_maxt = p_adj = p_holm = lo = hi = nan
        method = "max-T sign-flip"
        notes = [note] if note else []
        if n >= 2:
            rng = stable_rng(seed, "many-to-one", task, model, base, *treat)
            p_maxt, p_adj, exact, n_pat = maxt_pvalues(d, n_mc, rng)
            p_t = 2 * stats.t.sf(np.abs(t_stats(d)), n - 1)
            p_holm = holm(p_t)
            se = d.std(axis=0, ddof=1) / np.sqrt(n)
            crit = simultaneous_crit(d, 1 - alpha, True, n_sim, rng)
            lo, hi = est - crit * se, est + crit * se
            method = (f"max-T sign-flip ({'exact' if exact else 'Monte Carlo'}, {n_pat} patterns); "
                      "CI: simultaneous t (Dunnett, estimated correlation)")
            if 2.0 / 2**n >= alpha:
                notes.append(f"{n} seeds: sign-flip p cannot go below {2.0 / 2**n:.4g}")
        else:
            notes.append(f"{n} seed(s) with every masker: no test possible")
        if notes:
            warn(f"many-to-one {task}/{model}: " + "; ".join(notes))
        for j, t in enumerate(treat):
            rows.append({"task": task, "model": model, "treatment": t, "baseline": base,
                         "estimate": est[j], "ci_low": lo[j], "ci_high": hi[j],
                         "level": 1 - alpha, "p_maxt": p_maxt[j], "p_adj": p_adj[j],
                         "p_holm": p_holm[j], "n_pairs": n, "method": method,
                         "warning": "; ".join(notes)})
    return pd.DataFrame(rows, columns=MANY_TO_ONE_COLUMNS)


def mcb(scores: np.ndarray, alpha: float = 0.05, n_sim: int = N_SIM,
        rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hsu's constrained MCB on seed-paired scores (n, k): (in_set, low, high), simultaneous
    bounds for mu_i - max_{j != i} mu_j (Hsu 1984): ``high = max(0, min_j(mean_i - mean_j +
    d_i se_ij))`` (i is in the set when it is > 0) and ``low = min(0, min_j(mean_i - mean_j -
    d_i se_ij))``."""
    rng = rng if rng is not None else np.random.default_rng(0)
    n, k = scores.shape
    mean = scores.mean(axis=0)
    gap_low, gap_high = np.zeros(k), np.zeros(k)
    for i in range(k):
        others = [j for j in range(k) if j != i]
        d = scores[:, [i]] - scores[:, others]  # i - j: i worse than j when very negative
        se = d.std(axis=0, ddof=1) / np.sqrt(n)
        crit = simultaneous_crit(-d, 1 - alpha, two_sided=False, n_sim=n_sim, rng=rng) \
            if len(others) > 1 else float(stats.t.ppf(1 - alpha, n - 1))
        diff = mean[i] - mean[others]
        # i is shown worse than j when diff + crit * se < 0 (zero se: any negative diff)
        gap_high[i] = max(0.0, float(np.min(diff + crit * se)))
        gap_low[i] = min(0.0, float(np.min(diff - crit * se)))
    return gap_high > 0, gap_low, gap_high


def best(
    runs: pd.DataFrame,
    baseline: str | None = None,
    alpha: float = 0.05,
    *,
    treatments: Sequence[str] | None = None,
    n_mc: int = N_MC,
    n_sim: int = N_SIM,
    seed: int = 0,
    many: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Per cell: Hsu's MCB confidence set for the best masker (``in_best_set``; the baseline
    is a candidate, with estimate 0), each masker's MCB interval for its gap to the best of
    the others (``mcb_low``, ``mcb_high``), and for every treatment its gain over the baseline
    both naive (``naive_low``/``naive_high``: the plain paired t-interval, which overstates the
    gain of whichever treatment is picked as best) and selection-adjusted (``ci_low``/
    ``ci_high``: the simultaneous max-T interval of :func:`many_to_one`, valid for the picked
    one). ``apparent_best`` marks the treatment with the largest mean. Columns
    ``BEST_COLUMNS``; ``many``: a :func:`many_to_one` table to reuse."""
    runs = check_runs(runs)
    base, names = _treatments_by_baseline(runs, baseline, treatments)
    if many is None:
        many = many_to_one(runs, base, alpha, treatments=names, n_mc=n_mc, n_sim=n_sim,
                           seed=seed)
    rows = []
    for task, model in ordered_groups(many, ["task", "model"]):
        treat = many.loc[(many["task"] == task) & (many["model"] == model), "treatment"].tolist()
        scores, _seeds, _note = _cell_matrix(runs, task, model, [base, *treat])
        n = scores.shape[0]
        if n < 2:
            continue
        rng = stable_rng(seed, "mcb", task, model, base, *treat)
        in_set, low, high = mcb(scores, alpha, n_sim, rng)
        d = scores - scores[:, :1]
        est = d.mean(axis=0)
        half = stats.t.ppf(1 - alpha / 2, n - 1) * d.std(axis=0, ddof=1) / np.sqrt(n)
        top = int(np.argmax(est[1:])) + 1
        adj = many[(many["task"] == task) & (many["model"] == model)].set_index("treatment")
        for j, name in enumerate([base, *treat]):
            is_base = j == 0
            rows.append({
                "task": task, "model": model, "treatment": name, "baseline": base,
                "estimate": est[j], "in_best_set": bool(in_set[j]), "apparent_best": j == top,
                "mcb_low": low[j], "mcb_high": high[j],
                "naive_low": np.nan if is_base else est[j] - half[j],
                "naive_high": np.nan if is_base else est[j] + half[j],
                "ci_low": np.nan if is_base else adj.loc[name, "ci_low"],
                "ci_high": np.nan if is_base else adj.loc[name, "ci_high"],
                "level": 1 - alpha, "n_pairs": n,
                "method": "Hsu MCB (constrained, simultaneous t); gain: max-T simultaneous",
            })
    return pd.DataFrame(rows, columns=BEST_COLUMNS)
