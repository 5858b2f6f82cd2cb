"""Sequential seeds: run a study look by look and stop each comparison once it is decided.

``SequentialDesign(looks=(3, 5, 8, 12), alpha=0.05, spending="obf")`` plans looks after 3, 5,
8 and 12 seed pairs. After each look a driver calls ``design.decide(diffs)`` with every
comparison's paired differences so far; the answer maps each comparison to ``continue``
(run more seeds), ``better`` / ``worse`` (significant, stop), ``equivalent`` (within
``±margin``, stop) or ``futile`` (stop without a verdict: the futility rule fired, or the last
look passed undecided). The decision is a pure function of the differences: ``decide``
replays every look on the prefixes of each vector, so a comparison stopped at look 2 (its
vector stays at 5 values) keeps its verdict, and nothing is stored between calls.

Error control, in three layers:

* **Across looks (one comparison):** Lan-DeMets alpha spending, O'Brien-Fleming-like
  ``a(t) = 2 - 2 Phi(z_{a/2} / sqrt(t))`` or Pocock-like ``a ln(1 + (e - 1) t)``, with
  information fraction ``t = n / n_max``. Boundaries are on the two-sided p-value of the
  **paired t-test** at each look (not a normal approximation): the first look's is the spent
  alpha itself (exact); each later one is calibrated on ``N_CALIBRATION`` simulated null
  paths (fixed seed; the t-statistic's null law does not depend on the differences' sd), so
  that P(first crossing at look l) equals the alpha spent there. Where that increment is
  too small to calibrate (fewer than ``MIN_HITS`` simulated crossings), the boundary is the
  increment itself, which is conservative (P(cross at l, not before) <= P(p_l <= q)).
* **Across comparisons (the family):** Holm's procedure with group-sequential tests
  (Maurer & Bretz 2013, Stat. Biopharm. Res. 5(4)): while k hypotheses are unrejected each
  is tested at level alpha / k with the boundaries for that level, at the current look and
  (look back) the earlier ones; a rejection raises the others' level, and testing repeats
  at the same look until nothing more is rejected. This controls the family-wise error
  strongly at ``alpha`` over every comparison passed to ``decide`` (pass all of them, the
  decided ones included, at every look), whatever their correlation.
* **Futility** is non-binding (the error control above ignores it): at an interim look a
  comparison whose paired-t p-value exceeds that look's ``futility_p`` stops as ``futile``
  (default: none at the first look, 0.5 in the middle, 0.1 at the last interim look).

Equivalence (``margin`` given): at look l a comparison is ``equivalent`` when its paired TOST
p-value is at most the look's boundary at level alpha / m (Bonferroni over the m
comparisons), the same spending as the superiority tests.

``python -m analysis.sequential --simulate`` measures family-wise error, power and expected
seeds on the Typhoon family (12 comparisons) against the fixed design (README).
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
from scipy import stats

from analysis.paired import is_degenerate, tost_paired

DECISIONS = ("continue", "better", "worse", "equivalent", "futile")
SPENDING = ("obf", "pocock")
N_CALIBRATION = 400_000
MIN_HITS = 40
CALIBRATION_SEED = 20240514


def spent(t, alpha: float, spending: str) -> np.ndarray:
    """Cumulative two-sided alpha spent at information fractions ``t`` (Lan & DeMets 1983)."""
    t = np.asarray(t, dtype=float)
    if spending == "obf":
        return 2 - 2 * stats.norm.cdf(stats.norm.isf(alpha / 2) / np.sqrt(t))
    if spending == "pocock":
        return alpha * np.log(1 + (np.e - 1) * t)
    raise ValueError(f"spending must be one of {list(SPENDING)}, got {spending!r}")


def t_pvalues(d: np.ndarray, looks: Sequence[int]) -> np.ndarray:
    """Two-sided paired-t p-values of the prefixes ``d[..., :n]`` for n in ``looks``.

    ``d`` (..., n_max) -> (..., len(looks)); NaN where the differences have no spread.
    """
    d = np.asarray(d, dtype=float)
    out = np.full(d.shape[:-1] + (len(looks),), np.nan)
    for j, n in enumerate(looks):
        x = d[..., :n]
        mean, sd = x.mean(axis=-1), x.std(axis=-1, ddof=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            tstat = mean / (sd / np.sqrt(n))
        # zero spread (to a relative tolerance): no test, as in analysis.paired
        flat = sd <= 1e-9 * np.abs(x).max(axis=-1)
        out[..., j] = np.where(flat, np.nan, 2 * stats.t.sf(np.abs(tstat), n - 1))
    return out


@functools.lru_cache(maxsize=64)
def _null_pvalues(looks: tuple[int, ...]) -> np.ndarray:
    """p-values at each look of ``N_CALIBRATION`` null paths (fixed seed): (N, L)."""
    rng = np.random.default_rng(CALIBRATION_SEED)
    return t_pvalues(rng.standard_normal((N_CALIBRATION, looks[-1])), looks)


@functools.lru_cache(maxsize=1024)
def boundaries_for(looks: tuple[int, ...], level: float, spending: str) -> np.ndarray:
    """Nominal p-value boundaries (L,) of a two-sided group-sequential paired t-test at
    ``level``: reject at look l when p_l <= q_l."""
    cum = spent(np.asarray(looks) / looks[-1], level, spending)
    inc = np.diff(np.concatenate([[0.0], cum]))
    p = _null_pvalues(looks)
    n = p.shape[0]
    alive = np.ones(n, dtype=bool)
    q = np.empty(len(looks))
    for j, target in enumerate(inc):
        k = int(np.floor(target * n))
        live = np.sort(p[alive, j])
        # look 1 is a single t-test: its exact level is the increment itself
        q[j] = target if (j == 0 or k < MIN_HITS) else max(target, float(live[k - 1]))
        alive &= ~(p[:, j] <= q[j])
    return q


def _futility_thresholds(futility_p, n_looks: int) -> tuple[float, ...]:
    """Per-look p-value above which an undecided comparison stops as futile (the last
    look's entry is unused: it stops every undecided comparison).

    Default: none at the first look (3 pairs say too little), 0.5 at the middle interim
    looks and 0.1 at the last interim look -- the rule that kept the power loss against
    the fixed design under 5 points on the Typhoon family (README, "Sequential seeds").
    """
    if futility_p is None:
        interim = [1.0] + [0.5] * max(0, n_looks - 3) + ([0.1] if n_looks > 2 else [])
        return tuple(interim[: n_looks - 1]) + (1.0,)
    vals = np.broadcast_to(np.asarray(futility_p, dtype=float), (n_looks - 1,)) \
        if np.ndim(futility_p) == 0 else np.asarray(futility_p, dtype=float)
    if vals.shape != (n_looks - 1,) or not np.all((vals > 0) & (vals <= 1)):
        raise ValueError(f"futility_p must be one p-value in (0, 1] or one per look before "
                         f"the last ({n_looks - 1}), got {futility_p!r}")
    return tuple(float(v) for v in vals) + (1.0,)


class SequentialDesign:
    """Group-sequential plan over seed pairs for a family of comparisons (module docstring).

    ``looks``: increasing numbers of seed pairs (>= 2) at which to decide; ``alpha``: the
    family-wise error; ``spending``: ``"obf"`` or ``"pocock"``; ``margin``: equivalence
    margin in metric units (None: no equivalence stopping); ``futility``: stop comparisons
    whose p-value exceeds ``futility_p`` at an interim look (one value, or one per look
    before the last; default in :func:`_futility_thresholds`).
    """

    def __init__(self, looks: Sequence[int] = (3, 5, 8, 12), alpha: float = 0.05,
                 spending: str = "obf", margin: float | None = None, futility: bool = True,
                 futility_p: float | Sequence[float] | None = None):
        looks = tuple(int(n) for n in looks)
        if not looks or looks[0] < 2 or np.any(np.diff(looks) <= 0):
            raise ValueError(f"looks must be increasing seed counts >= 2, got {looks}")
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
        if spending not in SPENDING:
            raise ValueError(f"spending must be one of {list(SPENDING)}, got {spending!r}")
        if margin is not None and not (np.isfinite(margin) and margin > 0):
            raise ValueError(f"margin must be a positive number in metric units, got {margin!r}")
        self.looks, self.alpha, self.spending = looks, float(alpha), spending
        self.margin, self.futility = margin, bool(futility)
        self.futility_p = _futility_thresholds(futility_p, len(looks))

    def __repr__(self) -> str:
        return (f"SequentialDesign(looks={self.looks}, alpha={self.alpha}, "
                f"spending={self.spending!r}, margin={self.margin}, futility={self.futility})")

    def boundaries(self, n_comparisons: int = 1) -> list[dict]:
        """Per look: seeds, cumulative alpha spent and the nominal p-value boundary at the
        starting level alpha / n_comparisons (the Holm step raises it as others reject)."""
        level = self.alpha / n_comparisons
        q = boundaries_for(self.looks, level, self.spending)
        cum = spent(np.asarray(self.looks) / self.looks[-1], level, self.spending)
        return [{"look": j + 1, "n_pairs": n, "alpha_spent": float(c), "p_boundary": float(b),
                 "t_boundary": float(stats.t.isf(b / 2, n - 1))}
                for j, (n, c, b) in enumerate(zip(self.looks, cum, q, strict=True))]

    def decide(self, diffs: Mapping[Hashable, Sequence[float]]) -> dict[Hashable, str]:
        """Each comparison's decision given its paired differences so far (all comparisons
        of the study, decided ones included: the family size is ``len(diffs)``)."""
        return {key: dec for key, (dec, _n) in self.replay(diffs).items()}

    def replay(self, diffs: Mapping[Hashable, Sequence[float]]) -> dict[Hashable, tuple[str, int]]:
        """``decide`` plus the number of seed pairs each verdict rests on: (decision, n)."""
        keys = list(diffs)
        arrs = [np.asarray(diffs[k], dtype=float).ravel() for k in keys]
        for k, a in zip(keys, arrs, strict=True):
            if not np.all(np.isfinite(a)):
                raise ValueError(f"comparison {k!r}: differences must be finite")
        m = len(keys)
        if m == 0:
            return {}
        looks, last = self.looks, len(self.looks) - 1
        # p-values of every comparison's prefix at every look it reached: (m, L), NaN beyond
        p = np.full((m, len(looks)), np.nan)
        reached = np.array([[a.size >= n for n in looks] for a in arrs])
        n_looks = reached.sum(axis=1)
        for j in np.unique(n_looks[n_looks > 0]):  # one vectorised call per group
            rows = np.flatnonzero(n_looks == j)
            stack = np.stack([arrs[i][: looks[j - 1]] for i in rows])
            p[rows, :j] = t_pvalues(stack, looks[:j])
        state: list[tuple[str, int] | None] = [None] * m
        rejected = 0
        for j, n in enumerate(looks):
            live = [i for i in range(m) if state[i] is None and reached[i, j]]
            changed = True
            while changed and rejected < m:  # Holm: each rejection raises the others' level
                changed = False
                q = boundaries_for(looks, self.alpha / (m - rejected), self.spending)
                for i in live:
                    if state[i] is None and np.any(p[i, : j + 1] <= q[: j + 1]):
                        mean = arrs[i][:n].mean()
                        state[i] = ("better" if mean > 0 else "worse", n)
                        rejected += 1
                        changed = True
            q_eq = boundaries_for(looks, self.alpha / m, self.spending)[j]
            for i in live:
                if state[i] is not None:
                    continue
                d = arrs[i][:n]
                if (self.margin is not None and not is_degenerate(d)
                        and tost_paired(d, self.margin) <= q_eq):
                    state[i] = ("equivalent", n)
                # no p-value (zero spread so far: maybe collapsed runs) is no reason to stop early
                elif j == last or (self.futility and p[i, j] > self.futility_p[j]):
                    state[i] = ("futile", n)
        return {k: s if s is not None else ("continue", arrs[i].size)
                for i, (k, s) in enumerate(zip(keys, state, strict=True))}


def typhoon_family(rng: np.random.Generator, n_studies: int, n_max: int, dz: float,
                   n_cells: int = 6) -> np.ndarray:
    """Paired differences of the Typhoon family: per cell, typhoon vs random and typhoon vs
    whole-word (12 comparisons for 6 cells), sharing the typhoon run of each seed, so the two
    comparisons of a cell correlate at 0.5. Every comparison's true effect is ``dz`` in units
    of its differences' sd. Returns (n_studies, 2 * n_cells, n_max)."""
    runs = rng.standard_normal((n_studies, n_cells, 3, n_max)) / np.sqrt(2)
    d = np.concatenate([runs[:, :, 0] - runs[:, :, 1], runs[:, :, 0] - runs[:, :, 2]], axis=1)
    return d + dz


def fixed_design_rejections(d: np.ndarray, alpha: float) -> np.ndarray:
    """Holm over the family at the last look only (the fixed design): (S, m) bool."""
    from analysis.paired import holm

    p = t_pvalues(d, [d.shape[-1]])[..., 0]
    return np.array([holm(row) < alpha for row in p])


def simulate(design: SequentialDesign, dz: float, n_studies: int = 10_000, seed: int = 0,
             n_cells: int = 6) -> dict:
    """Family-wise error (dz = 0) or power (dz != 0), sequential vs fixed with the same
    maximum seeds, and expected seeds per comparison and per cell (a cell runs its seeds
    while either of its comparisons is undecided)."""
    rng = np.random.default_rng(seed)
    n_max = design.looks[-1]
    d = typhoon_family(rng, n_studies, n_max, dz, n_cells)
    m = d.shape[1]
    seq_reject = np.zeros((n_studies, m), dtype=bool)
    wrong_sign = np.zeros((n_studies, m), dtype=bool)
    n_used = np.zeros((n_studies, m))
    for s in range(n_studies):
        out = design.replay({i: d[s, i] for i in range(m)})
        for i, (dec, n) in out.items():
            seq_reject[s, i] = dec in ("better", "worse")
            wrong_sign[s, i] = dec == "worse"
            n_used[s, i] = n
    fixed = fixed_design_rejections(d, design.alpha)
    per_cell = np.maximum(n_used[:, :n_cells], n_used[:, n_cells:])
    se = lambda x: float(np.sqrt(x * (1 - x) / n_studies))  # noqa: E731
    out = {"dz": dz, "n_studies": n_studies, "n_comparisons": m, "n_max": n_max,
           "expected_seeds": float(n_used.mean()), "expected_seeds_per_cell": float(per_cell.mean())}
    if dz == 0:
        fwer, fwer_fixed = float(seq_reject.any(axis=1).mean()), float(fixed.any(axis=1).mean())
        return out | {"fwer": fwer, "fwer_se": se(fwer), "fwer_fixed": fwer_fixed}
    power = float(seq_reject.mean())
    return out | {"power": power, "power_fixed": float(fixed.mean()),
                  "power_se": float(seq_reject.mean(axis=1).std() / np.sqrt(n_studies)),
                  "wrong_sign": float(wrong_sign.mean())}


def oracle_seeds(design: SequentialDesign, dz: float, n_studies: int = 3000,
                 seed: int = 1, n_cells: int = 6) -> float:
    """Expected seeds per comparison of a clairvoyant design: a comparison the fixed design
    would miss stops at the first look, the others at the design's efficacy stop (no
    futility). A floor for any futility rule that keeps the fixed design's power."""
    rng = np.random.default_rng(seed)
    d = typhoon_family(rng, n_studies, design.looks[-1], dz, n_cells)
    fixed = fixed_design_rejections(d, design.alpha)
    efficacy_only = SequentialDesign(design.looks, design.alpha, design.spending, futility=False)
    used = np.empty(fixed.shape)
    for s in range(n_studies):
        out = efficacy_only.replay({i: d[s, i] for i in range(d.shape[1])})
        for i, (_dec, n) in out.items():
            used[s, i] = n if fixed[s, i] else design.looks[0]
    return float(used.mean())


def _main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m analysis.sequential")
    ap.add_argument("--simulate", action="store_true", help="README figures")
    ap.add_argument("--n-studies", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--spending", choices=SPENDING, nargs="+", default=list(SPENDING))
    ap.add_argument("--dz", type=float, default=1.0)
    args = ap.parse_args(argv)
    if not args.simulate:
        ap.error("nothing to do: pass --simulate")
    print(f"Typhoon family: 12 comparisons (6 cells x 2), looks (3, 5, 8, 12), alpha 0.05, "
          f"{args.n_studies} simulated studies per row (seed {args.seed})")
    print("| spending | FWER (null) ± se | power seq / fixed at d_z = "
          f"{args.dz:g} | E[seeds] seq / fixed | E[seeds per cell] |")
    print("|---|---:|---:|---:|---:|")
    for sp in args.spending:
        design = SequentialDesign(spending=sp)
        h0 = simulate(design, 0.0, args.n_studies, args.seed)
        h1 = simulate(design, args.dz, args.n_studies, args.seed + 1)
        print(f"| {sp} | {h0['fwer']:.4f} ± {h0['fwer_se']:.4f} (fixed {h0['fwer_fixed']:.4f}) "
              f"| {h1['power']:.3f} / {h1['power_fixed']:.3f} "
              f"| {h1['expected_seeds']:.2f} / {h1['n_max']} (null: {h0['expected_seeds']:.2f}) "
              f"| {h1['expected_seeds_per_cell']:.2f} |")
    for sp in args.spending:
        oracle = oracle_seeds(SequentialDesign(spending=sp), args.dz, args.n_studies, args.seed + 1)
        print(f"{sp}: a clairvoyant futility rule (fixed-design power kept) would still need "
              f"{oracle:.2f} seeds per comparison ({1 - oracle / 12:.1%} fewer than 12)")


if __name__ == "__main__":
    _main()
