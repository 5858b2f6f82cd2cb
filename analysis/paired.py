"""Tests and intervals on one vector of seed-paired differences ``d`` (shape (n,)).

Conventions (each checked against an independent reference in tests/stats):

* paired t: closed form, two-sided, interval at level 1 - alpha. With ``sd == 0`` (to a
  relative tolerance, :func:`is_degenerate`) the statistic is 0/0 (all differences zero) or
  ±inf (constant non-zero differences): the t-test is undefined there, so t, p and the
  interval are NaN and ``degenerate`` is True. No verdict (significant, equivalent) may rest
  on it; ``compare`` says why in its ``warning``.
* Wilcoxon signed-rank: exact two-sided p from the permutation distribution of the signed
  (mid)ranks, so ties are handled exactly (it is the conditional distribution given the
  tie pattern). Zero differences are dropped before ranking (``zero_method="wilcox"``,
  Wilcoxon's and scipy's default) or ranked and then given no sign (``"pratt"``). With no
  non-zero difference left the p-value is 1.
* sign-flip permutation on the sum of differences: exact over all 2**n sign patterns when
  n <= ``max_exact`` (default 20), otherwise ``n_perm`` Monte Carlo patterns from an
  explicit Generator, p = (1 + hits) / (1 + n_perm) so it is never 0.
* Differences equal to within ``REL_TOL`` of the largest |difference| are ties (and below it,
  zeros): ``0.84 - 0.83`` and ``0.83 - 0.82`` differ in the last bits. The tolerance is
  relative so that every p-value is invariant to the scale of the metric (F1 in [0, 1] or in
  points, or multiplied by 1e-12).
* Exact tests with n non-zero differences cannot go below p = 2 / 2**n (0.0625 at n = 5).
"""

from __future__ import annotations

import numpy as np
from scipy import stats

TIE_DECIMALS = 12  # analysis.disagreement's absolute rounding (metric values in [0, 1])
# Relative resolution of a vector of differences: float error in ``a - b`` is ~1e-16 of the
# values, so anything within 1e-9 of the largest |difference| is the same number.
REL_TOL = 1e-9


def _as_diffs(d) -> np.ndarray:
    d = np.asarray(d, dtype=float).ravel()
    if not np.all(np.isfinite(d)):
        raise ValueError("paired differences must be finite")
    return d


def snap_ties(d) -> np.ndarray:
    """``d`` rounded to a grid of step ``REL_TOL * max|d|``: float-noise ties become exact ties
    and float-noise zeros exact zeros, whatever the scale of the metric."""
    d = _as_diffs(d)
    scale = float(np.abs(d).max()) if d.size else 0.0
    if scale == 0.0:
        return np.zeros_like(d)
    step = REL_TOL * scale
    return np.round(d / step) * step


def is_degenerate(d) -> bool:
    """True when n >= 2 differences have no spread (sd == 0 relative to max|d|): all zero
    (typically collapsed runs) or all the same non-zero value. t-tests and TOST are
    undefined there."""
    d = snap_ties(d)
    return d.size >= 2 and bool(np.all(d == d[0]))


def min_exact_p(n_nonzero: int) -> float:
    """Smallest two-sided p an exact sign-flip or signed-rank test can reach with n pairs."""
    return float(min(1.0, 2.0 ** (1 - n_nonzero))) if n_nonzero > 0 else 1.0


def ttest_paired(d, alpha: float = 0.05) -> dict:
    """Paired t-test and t-interval for the mean difference.

    Returns ``mean, sd, se, t, df, p, ci_low, ci_high, degenerate``; all but ``mean`` are
    NaN when n < 2 (no variance estimate). With ``sd == 0`` (:func:`is_degenerate`) ``sd`` and
    ``se`` are 0, ``df`` is n - 1 and ``t``, ``p`` and the interval are NaN: 0/0 or ±inf is
    not evidence, however many seeds agree to the last bit.
    """
    d = _as_diffs(d)
    n = d.size
    out = dict.fromkeys(("mean", "sd", "se", "t", "df", "p", "ci_low", "ci_high"), np.nan)
    out["degenerate"] = False
    if n == 0:
        return out
    mean = float(d.mean())
    out["mean"] = mean
    if n < 2:
        return out
    df = n - 1
    if is_degenerate(d):
        return out | {"sd": 0.0, "se": 0.0, "df": float(df), "degenerate": True}
    sd = float(d.std(ddof=1))
    se = sd / np.sqrt(n)
    t = mean / se
    p = float(2 * stats.t.sf(abs(t), df))
    half = float(stats.t.ppf(1 - alpha / 2, df)) * se
    out.update(sd=sd, se=se, t=float(t), df=float(df), p=p, ci_low=mean - half, ci_high=mean + half)
    return out


def tost_paired(d, margin: float) -> float:
    """Paired TOST p-value for equivalence within (-margin, +margin): max of two one-sided t p's.

    Equivalent to "the (1 - 2 alpha) t-interval lies inside ±margin". NaN when n < 2 or the
    differences have no spread (all zero -- typically collapsed runs -- or constant): a zero
    standard error would make any mean inside the margin "equivalent" with p = 0.
    """
    if margin is None or not np.isfinite(margin) or margin <= 0:
        raise ValueError(f"margin must be a positive number, got {margin!r}")
    r = ttest_paired(d)
    if np.isnan(r["sd"]) or r["degenerate"]:
        return np.nan
    df, se, mean = r["df"], r["se"], r["mean"]
    t_low = (mean + margin) / se
    t_upp = (mean - margin) / se
    p_low = stats.t.sf(t_low, df)  # H0: mean <= -margin
    p_upp = stats.t.cdf(t_upp, df)  # H0: mean >= +margin
    return float(max(p_low, p_upp))


def _midranks(x: np.ndarray) -> np.ndarray:
    return stats.rankdata(x, method="average")


def wilcoxon_exact(d, zero_method: str = "wilcox") -> float:
    """Exact two-sided Wilcoxon signed-rank p-value (ties by midranks, exact conditional law).

    The null law of W+ = sum of ranks of positive differences is built by dynamic
    programming on doubled ranks (midranks are multiples of 1/2), so it is exact for any n.
    """
    d = snap_ties(d)
    if zero_method == "wilcox":
        d = d[d != 0]
        ranks = _midranks(np.abs(d))
    elif zero_method == "pratt":
        ranks = _midranks(np.abs(d))
        ranks, d = ranks[d != 0], d[d != 0]
    else:
        raise ValueError(f"zero_method must be 'wilcox' or 'pratt', got {zero_method!r}")
    if d.size == 0:
        return 1.0
    doubled = np.rint(2 * ranks).astype(np.int64)
    total = int(doubled.sum())
    law = np.zeros(total + 1)
    law[0] = 1.0
    for r in doubled:
        # Each rank joins W+ with probability 1/2 under H0 (symmetric differences).
        shifted = np.zeros_like(law)
        shifted[r:] = law[: total + 1 - r]
        law = 0.5 * (law + shifted)
    w_obs = int(doubled[d > 0].sum())
    support = np.arange(total + 1)
    centre = total / 2
    extreme = np.abs(support - centre) >= abs(w_obs - centre) - 1e-9
    return float(min(1.0, law[extreme].sum()))


def _signed_sums(x: np.ndarray) -> np.ndarray:
    """All 2**len(x) sums of ±x_i, shape (2**len(x),)."""
    signs = 1 - 2 * ((np.arange(2 ** x.size)[:, None] >> np.arange(x.size)) & 1)
    return signs @ x


def signflip_test(
    d,
    rng: np.random.Generator | None = None,
    n_perm: int = 100_000,
    max_exact: int = 20,
) -> tuple[float, str]:
    """Two-sided sign-flip permutation p-value of the sum (= mean) of differences.

    Returns ``(p, method)`` with ``method`` ``"exact"`` or ``"monte_carlo"``. The exact
    branch enumerates the 2**n patterns as an outer sum of two halves (2 * 2**(n/2) sums,
    2**n comparisons), so n = 20 costs one 1024 × 1024 array. The Monte Carlo branch needs
    ``rng`` (a numpy Generator); there is no fallback to a global RNG.
    """
    d = _as_diffs(d)
    n = d.size
    if n == 0:
        return np.nan, "exact"
    obs = abs(d.sum())
    tol = 1e-10 * max(np.abs(d).sum(), 1e-300)
    if n <= max_exact:
        h = n // 2
        a, b = _signed_sums(d[:h]), _signed_sums(d[h:])
        hits = np.count_nonzero(np.abs(a[:, None] + b[None, :]) >= obs - tol)
        return float(hits / 2.0**n), "exact"
    if rng is None:
        raise ValueError(f"n={n} > max_exact={max_exact}: pass rng for the Monte Carlo test")
    hits = 0
    chunk = max(1, 2_000_000 // n)
    for start in range(0, n_perm, chunk):
        m = min(chunk, n_perm - start)
        signs = rng.integers(0, 2, size=(m, n), dtype=np.int8) * 2 - 1
        hits += int(np.count_nonzero(np.abs(signs @ d) >= obs - tol))
    return float((1 + hits) / (1 + n_perm)), "monte_carlo"


def holm(p) -> np.ndarray:
    """Holm step-down adjusted p-values (Holm 1979; not Holm-Šidák).

    NaN p-values (comparisons where no test was possible) stay NaN but still count in the
    family size, as if their p were 1 -- conservative for the others. Shape: (m,) -> (m,).
    """
    p = np.asarray(p, dtype=float).ravel()
    m = p.size
    filled = np.where(np.isnan(p), 1.0, p)
    order = np.argsort(filled, kind="stable")
    scaled = (m - np.arange(m)) * filled[order]
    adj_sorted = np.minimum(1.0, np.maximum.accumulate(scaled))
    adj = np.empty(m)
    adj[order] = adj_sorted
    adj[np.isnan(p)] = np.nan
    return adj


def bonferroni(p) -> np.ndarray:
    p = np.asarray(p, dtype=float).ravel()
    return np.minimum(1.0, p * p.size)


CORRECTIONS = {"holm": holm, "bonferroni": bonferroni, "none": lambda p: np.asarray(p, float)}


def adjust(p, method: str = "holm") -> np.ndarray:
    try:
        return CORRECTIONS[method](p)
    except KeyError:
        raise ValueError(f"correction must be one of {sorted(CORRECTIONS)}, got {method!r}") from None
