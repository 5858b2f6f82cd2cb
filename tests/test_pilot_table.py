"""analysis.pilot: collapse flags, reference levels, seeds needed and verdicts, checked by hand and
against analysis.power and a simulation of the TOST."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.pilot import (
    collapsed_runs,
    equivalence_power,
    pilot_table,
    reference_levels,
    seeds_needed_equivalence,
)
from analysis.power import seeds_needed

LABELS = np.array([0] * 50 + [1] * 30 + [2] * 20)  # majority class 0: accuracy 0.5


def _preds(run_id: str, predictions) -> pd.DataFrame:
    return pd.DataFrame({"run_id": run_id, "example_id": [f"{i:03d}" for i in range(len(LABELS))],
                         "label": LABELS, "prediction": predictions})


def test_collapse_flags_by_hand():
    single = np.zeros(100, dtype=int)  # always the majority class
    near = LABELS.copy()
    near[:40] = 1  # 10 of 50 class-0 right + 50 others: accuracy 0.60 ≤ 0.5 + 2·sqrt(0.25/100) = 0.60
    learned = LABELS.copy()
    learned[:30] = 1  # accuracy 0.70 > 0.60
    flags = collapsed_runs(pd.concat([_preds("a", single), _preds("b", near), _preds("c", learned)]))
    flags = flags.set_index("run_id")
    assert flags.loc["a", "single_class"] and flags.loc["a", "collapsed"]
    assert flags.loc["b", "accuracy"] == pytest.approx(0.60)
    assert not flags.loc["b", "single_class"] and flags.loc["b", "collapsed"]
    assert flags.loc["c", "accuracy"] == pytest.approx(0.70) and not flags.loc["c", "collapsed"]
    assert flags["majority_accuracy"].tolist() == [0.5, 0.5, 0.5]


def test_reference_levels():
    maj, chance = reference_levels("accuracy", LABELS, 3)
    assert maj == 0.5 and chance == pytest.approx(1 / 3, abs=0.01)
    maj, chance = reference_levels("macro_f1", LABELS, 3)
    assert maj == pytest.approx((2 * 50 / (2 * 50 + 50)) / 3)  # F1 of class 0 (P 0.5, R 1), others 0
    # uniform guessing: per class c, precision ≈ π_c and recall ≈ 1/3
    approx = np.mean([2 * p / 3 / (p + 1 / 3) for p in (0.5, 0.3, 0.2)])
    assert chance == pytest.approx(approx, abs=0.02)
    assert reference_levels("mcc", np.array([0, 1] * 50), 2) [0] == 0.0


@pytest.mark.parametrize("sd", [0.01, 0.02, 0.05])
def test_equivalence_power_against_simulation(sd):
    """The TOST power formula (a union bound) is never above a simulated TOST, and close to it."""
    margin, alpha = 0.02, 0.05
    n = int(seeds_needed_equivalence(margin, sd, alpha))
    assert equivalence_power(margin, sd, n, alpha) >= 0.8 > equivalence_power(margin, sd, n - 1, alpha) or n == 2
    rng = np.random.default_rng(0)
    reps = 20000
    d = rng.normal(0.0, sd, size=(reps, n))
    mean, se = d.mean(1), d.std(1, ddof=1) / np.sqrt(n)
    crit = stats.t.isf(alpha, n - 1)
    simulated = np.mean(((mean + margin) / se > crit) & ((mean - margin) / se < -crit))
    bound = equivalence_power(margin, sd, n, alpha)
    mcse = np.sqrt(bound * (1 - bound) / reps)
    assert simulated >= bound - 4 * mcse
    assert simulated - bound < 0.05


def _frames(values: dict[str, list[float]], collapsed: set[str] = frozenset()):
    runs, preds = [], []
    for masker, vals in values.items():
        for seed, v in enumerate(vals):
            rid = f"{masker}-{seed}"
            runs.append({"run_id": rid, "task": "t", "model": "m", "masker": masker, "seed": seed,
                         "metric": "accuracy", "value": v, "wall_time_s": 10.0 + seed})
            good = LABELS.copy()
            good[:20] = 1
            preds.append(_preds(rid, np.zeros(100, dtype=int) if masker in collapsed else good))
    return pd.DataFrame(runs), pd.concat(preds)


def test_seeds_needed_match_the_power_functions():
    base = [0.80, 0.83, 0.78, 0.81]
    treat = [0.81, 0.85, 0.78, 0.83]
    runs, preds = _frames({"none": base, "mask": treat})
    table = pilot_table(runs, preds, [("mask", "none")], margin=0.02, alpha=0.05, planned_seeds=5)
    rows = table.set_index("masker")
    sd_diff = float(np.std(np.subtract(treat, base), ddof=1))
    assert rows.loc["mask", "sd_source"] == "paired" and rows.loc["mask", "n_pairs"] == 4
    assert rows.loc["mask", "sd_diff"] == pytest.approx(sd_diff)
    assert rows.loc["mask", "seeds_needed"] == seeds_needed(0.02, sd_diff, 0.05)
    assert rows.loc["mask", "seeds_needed_equivalence"] == seeds_needed_equivalence(0.02, sd_diff, 0.05)
    sd_seed = float(np.std(base, ddof=1))
    assert rows.loc["none", "sd_seed"] == pytest.approx(sd_seed)
    assert rows.loc["none", "sd_source"] == "sqrt2_seed_sd"
    assert rows.loc["none", "sd_diff"] == pytest.approx(np.sqrt(2) * sd_seed)
    assert rows.loc["none", "seeds_needed"] == seeds_needed(0.02, np.sqrt(2) * sd_seed, 0.05)
    assert rows.loc["none", "mean"] == pytest.approx(np.mean(base))
    assert rows.loc["none", "majority"] == 0.5 and rows.loc["none", "run_s"] == pytest.approx(11.5)
    assert set(table["level"]) == {0.95} and set(table["baseline"]) == {"none"}
    # the cell's verdict rests on the paired SD, the one the study's tests will face
    worst = max(seeds_needed(0.02, sd_diff, 0.05), seeds_needed_equivalence(0.02, sd_diff, 0.05))
    expected = "ok" if worst <= 5 else f"too noisy for the planned seeds (5 planned, {int(worst)} needed)"
    assert set(table["verdict"]) == {expected}


def test_verdicts():
    runs, preds = _frames({"none": [0.5, 0.5]}, collapsed={"none"})
    table = pilot_table(runs, preds, [("mask", "none")], margin=0.02, planned_seeds=5)
    assert table["verdict"].iloc[0] == "collapsed (2 of 2 runs)"
    runs, preds = _frames({"none": [0.70, 0.80]})  # SD 0.07: hundreds of seeds for a 2-point margin
    table = pilot_table(runs, preds, [("mask", "none")], margin=0.02, planned_seeds=5)
    assert table["verdict"].iloc[0].startswith("too noisy for the planned seeds (5 planned, ")
    runs, preds = _frames({"none": [0.700, 0.701]})
    table = pilot_table(runs, preds, [("mask", "none")], margin=0.02, planned_seeds=5)
    assert table["verdict"].iloc[0] == "ok" and table["seeds_needed"].iloc[0] == 2
    table = pilot_table(runs, preds, [("mask", "none")], margin=None, planned_seeds=5)
    assert table["verdict"].iloc[0].startswith("ok (no margin declared")


def test_pilot_specs_pick_the_first_seeds_of_the_baselines():
    from pathlib import Path

    from study.pilot import baseline_maskers, pilot_specs
    from study.protocol import load_protocol
    from study.spec import expand

    p = load_protocol(Path(__file__).resolve().parents[1] / "protocols" / "typhoon-replication-offline.yaml")
    specs = expand(p)
    assert baseline_maskers(p) == ["random", "whole-word"]  # the baselines of its comparisons
    base = pilot_specs(p, specs, 2, "baseline")
    assert len(base) == 2 * 2 * 3 * 2 and {s.seed for s in base} == {0, 1}
    assert {s.masker["name"] for s in base} == {"random", "whole-word"}
    assert len(pilot_specs(p, specs, 3, "all")) == 3 * 2 * 3 * 3
    assert {s.run_id for s in base} <= {s.run_id for s in specs}  # ordinary runs of the grid
