"""Paired bootstrap of the mean difference: BCa (default) and percentile intervals.

The resampling follows ``scipy.stats.bootstrap`` draw for draw (``rng.integers(0, n,
(n_boot, n))`` for one sample), and BCa follows Efron & Tibshirani (1993) eq. 14.14/14.15
with the jackknife acceleration and the "mean" percentile-of-score for the bias
correction, so the tests can pin this implementation to scipy's to 1e-12 with the same
Generator. Everything is vectorised over leading axes so a coverage simulation evaluates
thousands of data sets at once.

Small n: with n = 5 the bootstrap distribution of a mean has at most 126 distinct values
and BCa/percentile intervals under-cover badly (see analysis/README.md for measured
coverage); ``compare`` attaches a warning.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr, ndtri

METHODS = ("bca", "percentile")


def bootstrap_means(d, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap distribution of the mean of the last axis.

    ``d``: (..., n) -> (..., n_boot). A 1-D ``d`` uses one (n_boot, n) index draw (scipy's
    scheme); batched ``d`` gets independent indices per row, drawn in memory-bounded chunks.
    """
    d = np.asarray(d, dtype=float)
    n = d.shape[-1]
    if d.ndim == 1:
        return d[rng.integers(0, n, (n_boot, n))].mean(axis=-1)
    lead = d.shape[:-1]
    flat = d.reshape(-1, n)
    out = np.empty((flat.shape[0], n_boot))
    rows_per_chunk = max(1, 4_000_000 // (n_boot * n))
    for s in range(0, flat.shape[0], rows_per_chunk):
        blk = flat[s : s + rows_per_chunk]
        idx = rng.integers(0, n, (blk.shape[0], n_boot, n))
        out[s : s + blk.shape[0]] = np.take_along_axis(
            blk[:, None, :], idx, axis=-1
        ).mean(axis=-1)
    return out.reshape(*lead, n_boot)


def bootstrap_means_loop(d, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Reference Python loop over resamples (same draws as :func:`bootstrap_means` for 1-D
    ``d`` only when the Generator state matches); used by the benchmark and tests."""
    d = np.asarray(d, dtype=float)
    n = d.size
    out = np.empty(n_boot)
    for b in range(n_boot):
        out[b] = d[rng.integers(0, n, n)].mean()
    return out


def _jackknife_acceleration(d: np.ndarray) -> np.ndarray:
    n = d.shape[-1]
    theta_i = (d.sum(axis=-1, keepdims=True) - d) / (n - 1)
    u = theta_i.mean(axis=-1, keepdims=True) - theta_i
    num = np.sum(u**3, axis=-1)
    den = np.sum(u**2, axis=-1) ** 1.5
    with np.errstate(divide="ignore", invalid="ignore"):
        # Constant data: no skewness to correct for.
        return np.where(den > 0, num / (6 * np.where(den > 0, den, 1.0)), 0.0)


def _quantile(boot: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Per-row linear-interpolation quantile: boot (m, B), q (m,) -> (m,); NaN q -> NaN."""
    srt = np.sort(boot, axis=-1)
    big_b = srt.shape[-1]
    pos = np.clip(np.nan_to_num(q, nan=0.0), 0, 1) * (big_b - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, big_b - 1)
    rows = np.arange(srt.shape[0])
    frac = pos - lo
    val = srt[rows, lo] + frac * (srt[rows, hi] - srt[rows, lo])
    return np.where(np.isnan(q), np.nan, val)


def interval_from_boot(d, boot, alpha: float = 0.05, method: str = "bca") -> tuple:
    """(low, high) at level 1 - alpha from a bootstrap distribution of the mean.

    ``d``: (..., n), ``boot``: (..., B) -> two arrays of shape (...) (floats for 1-D d).
    BCa returns NaN where the bias correction is infinite (the observed mean lies outside
    the bootstrap distribution), as scipy does.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    d = np.asarray(d, dtype=float)
    boot = np.asarray(boot, dtype=float)
    lead = d.shape[:-1]
    d2 = d.reshape(-1, d.shape[-1])
    b2 = boot.reshape(-1, boot.shape[-1])
    m = d2.shape[0]
    if method == "percentile":
        a1 = np.full(m, alpha / 2)
        a2 = np.full(m, 1 - alpha / 2)
    else:
        theta = d2.mean(axis=-1, keepdims=True)
        big_b = b2.shape[-1]
        pct = (np.count_nonzero(b2 < theta, axis=-1) + np.count_nonzero(b2 <= theta, axis=-1)) / (
            2 * big_b
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            z0 = ndtri(pct)
            acc = _jackknife_acceleration(d2)
            za = ndtri(alpha / 2)
            num1, num2 = z0 + za, z0 - za
            a1 = ndtr(z0 + num1 / (1 - acc * num1))
            a2 = ndtr(z0 + num2 / (1 - acc * num2))
    low = _quantile(b2, a1).reshape(lead)
    high = _quantile(b2, a2).reshape(lead)
    if not lead:
        return float(low), float(high)
    return low, high


def bootstrap_ci(
    d,
    n_boot: int = 10_000,
    alpha: float = 0.05,
    rng: np.random.Generator | None = None,
    method: str = "bca",
) -> tuple:
    """Bootstrap CI of the mean of ``d`` ((n,) or (..., n)) at level 1 - alpha.

    ``rng`` is required: a numpy Generator (e.g. ``np.random.default_rng(seed)``). Returns
    NaN for n < 3, where a bootstrap of a mean cannot say anything useful.
    """
    if rng is None:
        raise ValueError("bootstrap_ci needs an explicit numpy Generator (rng=...)")
    d = np.asarray(d, dtype=float)
    if d.shape[-1] < 3:
        nan = np.full(d.shape[:-1], np.nan)
        return (float(nan), float(nan)) if d.ndim == 1 else (nan, nan)
    boot = bootstrap_means(d, n_boot, rng)
    return interval_from_boot(d, boot, alpha, method)
