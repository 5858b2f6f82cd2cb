"""Seed pairing and its audit.

Paired tests are valid only if, for a given seed, treatment and baseline saw the same
classifier-head initialisation and the same data order. The store records fingerprints of
both; a pair whose fingerprints differ is never silently paired:

* ``on_mismatch="raise"`` (default): :class:`PairingError` naming every offending
  task/model/seed/masker pair;
* ``on_mismatch="drop"``: the pair is dropped with an :class:`AnalysisWarning` and the
  comparison's ``warning`` text says so.

A pair where either side lacks a fingerprint (an old store, or a runs frame without the
columns) cannot be audited; it is kept and counted as ``unaudited``. Runs on CUDA also record
the attention kernels they were pinned to (``env.attention_kernels``); a pair whose kernels
differ is a ``mismatch`` as well.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis._frames import check_runs, resolve_comparisons, warn

FINGERPRINT_COLUMNS = ("data_order_fp", "head_init_fp", "data_fp")
AUDIT_COLUMNS = ["task", "model", "treatment", "baseline", "seed", "status", "detail"]
PAIR_COLUMNS = [
    "task", "model", "masker", "baseline", "seed", "value_treatment", "value_baseline", "diff",
]


class PairingError(ValueError):
    """Runs that would be paired by seed were not trained under the same seed streams."""


def audit_pairing(
    runs: pd.DataFrame,
    baseline: str | None = None,
    comparisons: Sequence[tuple[str, str]] | None = None,
) -> pd.DataFrame:
    """One row per (task, model, treatment, baseline, seed) the comparisons touch.

    ``status`` is one of ``ok`` (fingerprints agree), ``unaudited`` (a fingerprint is
    missing), ``mismatch`` (a fingerprint differs; ``detail`` says which), ``no_baseline``
    / ``no_treatment`` (the seed ran for one masker only). Shape: (n_pairs_total, 7).
    """
    runs = check_runs(runs)
    pairs = resolve_comparisons(runs, baseline, comparisons)
    return _audit(runs, pairs)


def attention_kernel_column(runs: pd.DataFrame) -> pd.Series | None:
    """Each run's pinned CUDA attention kernels (``env.attention_kernels``, e.g. "efficient,math"),
    None for a run without them (CPU runs, older stores); None when the frame has no ``env``."""
    if "env" not in runs.columns:
        return None

    def kernels(env) -> str | None:
        if not isinstance(env, str):
            return None
        try:
            found = json.loads(env).get("attention_kernels")
        except (ValueError, AttributeError):
            return None
        return ",".join(map(str, found)) if found else None

    return runs["env"].map(kernels)


def _audit(runs: pd.DataFrame, pairs: list[tuple[str, str]]) -> pd.DataFrame:
    fps = [c for c in FINGERPRINT_COLUMNS if c in runs.columns]
    kernels = attention_kernel_column(runs)
    if kernels is not None:  # a pair that ran different attention kernels computed different functions
        runs = runs.assign(attention_kernels=kernels)
    keep = ["task", "model", "seed", "value", *fps, *(["attention_kernels"] if kernels is not None else [])]
    cells = runs[["task", "model"]].drop_duplicates().reset_index(drop=True)
    cells["_cell"] = np.arange(len(cells))
    parts = []
    for order, (treat, base) in enumerate(pairs):
        t = runs.loc[runs["masker"] == treat, keep]
        b = runs.loc[runs["masker"] == base, keep]
        # Only cells where both maskers ran: a pair of maskers absent from a cell is not a gap.
        both = t[["task", "model"]].drop_duplicates().merge(b[["task", "model"]].drop_duplicates())
        m = t.merge(b, on=["task", "model", "seed"], how="outer", suffixes=("_t", "_b"),
                    indicator=True).merge(both, on=["task", "model"])
        m["treatment"], m["baseline"], m["_order"] = treat, base, order
        parts.append(m)
    m = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if m.empty:
        return pd.DataFrame(columns=[*AUDIT_COLUMNS, "value_treatment", "value_baseline"])
    m = m.merge(cells, on=["task", "model"]).sort_values(["_cell", "_order", "seed"], kind="stable")
    status = np.full(len(m), "ok", dtype=object)
    detail = np.full(len(m), "", dtype=object)
    both_sides = (m["_merge"] == "both").to_numpy()
    differ = [[] for _ in range(len(m))]
    missing = np.zeros(len(m), dtype=bool)
    for c in fps:
        vt, vb = m[f"{c}_t"], m[f"{c}_b"]
        have = (vt.notna() & vb.notna()).to_numpy()
        missing |= ~have
        neq = have & (vt.astype(str) != vb.astype(str)).to_numpy() & both_sides
        for i in np.flatnonzero(neq):
            differ[i].append(f"{c} {str(vt.iloc[i])[:12]}≠{str(vb.iloc[i])[:12]}")
    if kernels is not None:  # compared where both runs recorded them (CUDA runs); never "unaudited"
        vt, vb = m["attention_kernels_t"], m["attention_kernels_b"]
        for i in np.flatnonzero((vt.notna() & vb.notna() & (vt != vb)).to_numpy() & both_sides):
            differ[i].append(f"attention kernels {vt.iloc[i]}≠{vb.iloc[i]}")
    unaudited = both_sides & (missing if fps else np.ones(len(m), dtype=bool))
    status[unaudited] = "unaudited"
    gone = [c for c in FINGERPRINT_COLUMNS if c not in fps]
    for i in np.flatnonzero(unaudited):
        holes = [c for c in fps if pd.isna(m[f"{c}_t"].iloc[i]) or pd.isna(m[f"{c}_b"].iloc[i])]
        detail[i] = "missing " + ", ".join(holes + gone)
    for i, d in enumerate(differ):
        if d:
            status[i], detail[i] = "mismatch", "; ".join(d)
    left = (m["_merge"] == "left_only").to_numpy()
    right = (m["_merge"] == "right_only").to_numpy()
    status[left], status[right] = "no_baseline", "no_treatment"
    detail[left] = [f"no {b} run for this seed" for b in m["baseline"].to_numpy()[left]]
    detail[right] = [f"no {t} run for this seed" for t in m["treatment"].to_numpy()[right]]
    out = pd.DataFrame({
        "task": m["task"].to_numpy(), "model": m["model"].to_numpy(),
        "treatment": m["treatment"].to_numpy(), "baseline": m["baseline"].to_numpy(),
        "seed": m["seed"].to_numpy(), "status": status, "detail": detail,
        "value_treatment": m["value_t"].to_numpy(), "value_baseline": m["value_b"].to_numpy(),
    })
    return out


def pair_runs(
    runs: pd.DataFrame,
    pairs: list[tuple[str, str]],
    on_mismatch: str = "raise",
) -> tuple[pd.DataFrame, pd.DataFrame, dict[tuple, list[str]]]:
    """Pair treatment and baseline runs by seed within each task × model.

    Returns ``(paired, audit, notes)``: ``paired`` has one row per usable pair with columns
    ``PAIR_COLUMNS`` (``diff = value_treatment - value_baseline``); ``audit`` is
    :func:`audit_pairing`'s frame; ``notes`` maps (task, model, treatment, baseline) to the
    messages that belong in that comparison's ``warning`` text. ``runs`` must already have
    passed :func:`analysis._frames.check_runs`.
    """
    if on_mismatch not in ("raise", "drop"):
        raise ValueError(f"on_mismatch must be 'raise' or 'drop', got {on_mismatch!r}")
    audit = _audit(runs, pairs)
    cells_of = runs.groupby("masker")[["task", "model"]].apply(
        lambda g: set(map(tuple, g.values)))
    for treat, base in pairs:
        lonely = sorted(cells_of.get(treat, set()) ^ cells_of.get(base, set()), key=str)
        if lonely:
            where = ", ".join("/".join(map(str, c)) for c in lonely)
            warn(f"{treat} vs {base} not compared on {where}: only one of the two maskers ran there")
    has_fps = any(c in runs.columns for c in FINGERPRINT_COLUMNS)
    bad = audit[audit["status"] == "mismatch"]
    if len(bad) and on_mismatch == "raise":
        lines = [
            f"  task={r.task} model={r.model} seed={r.seed}: {r.treatment} vs {r.baseline}: {r.detail}"
            for r in bad.itertuples()
        ]
        raise PairingError(
            f"{len(bad)} seed pair(s) were not trained under the same seed streams "
            "(fingerprints differ), so they cannot be paired:\n" + "\n".join(lines)
            + "\nRe-run them, or pass on_mismatch='drop' to analyse without them."
        )
    notes: dict[tuple, list[str]] = {}
    for key, grp in audit.groupby(["task", "model", "treatment", "baseline"], sort=False):
        msgs = []
        for status, what in (("no_baseline", "no baseline run"), ("no_treatment", "no treatment run")):
            seeds = grp.loc[grp["status"] == status, "seed"].tolist()
            if seeds:
                msgs.append(f"dropped seed(s) {seeds} with {what}")
        mism = grp.loc[grp["status"] == "mismatch", "seed"].tolist()
        if mism:
            msgs.append(f"dropped seed(s) {mism}: fingerprints differ")
        n_unaudited = int((grp["status"] == "unaudited").sum())
        # A frame without fingerprint columns is a deliberate minimal input; only flag holes.
        if n_unaudited and has_fps:
            msgs.append(f"{n_unaudited} pair(s) unaudited (fingerprints missing)")
        if msgs:
            notes[key] = msgs
            dropped = [m for m in msgs if m.startswith("dropped")]
            if dropped:
                warn(f"{key[0]}/{key[1]} {key[2]} vs {key[3]}: " + "; ".join(dropped))
    ok = audit[audit["status"].isin(["ok", "unaudited"])].rename(columns={"treatment": "masker"})
    ok["diff"] = ok["value_treatment"].astype(float) - ok["value_baseline"].astype(float)
    return ok[PAIR_COLUMNS].reset_index(drop=True), audit[AUDIT_COLUMNS], notes
