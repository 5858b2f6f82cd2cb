"""Pairing audit (fingerprints) and single-run disagreement vs hand computation."""

from __future__ import annotations

import numpy as np
import pytest
from _analysis_testkit import make_runs

from analysis import (
    AnalysisWarning,
    PairingError,
    audit_pairing,
    compare,
    single_run_disagreement,
)
from analysis.disagreement import disagreement_stats


def with_fps(runs):
    runs = runs.copy()
    runs["data_order_fp"] = [f"order-{s}" for s in runs.seed]
    runs["head_init_fp"] = [f"head-{s}" for s in runs.seed]
    return runs


def test_matching_fingerprints_pair():
    runs = with_fps(make_runs({"a": [0.01, 0.02, 0.0, 0.01]}))
    audit = audit_pairing(runs)
    assert set(audit.status) == {"ok"} and len(audit) == 4
    assert compare(runs, n_boot=100).n_pairs.iloc[0] == 4


def test_mismatched_fingerprint_is_refused_with_clear_message():
    runs = with_fps(make_runs({"a": [0.01, 0.02, 0.0, 0.01]}, task="mrpc", model="bert"))
    runs.loc[(runs.masker == "a") & (runs.seed == 2), "head_init_fp"] = "head-other"
    with pytest.raises(PairingError) as err:
        compare(runs)
    msg = str(err.value)
    for part in ("task=mrpc", "model=bert", "seed=2", "a vs none", "head_init_fp", "on_mismatch"):
        assert part in msg
    assert audit_pairing(runs).set_index("seed").loc[2, "status"] == "mismatch"
    with pytest.warns(AnalysisWarning, match="fingerprints differ"):
        table = compare(runs, n_boot=100, on_mismatch="drop")
    assert table.n_pairs.iloc[0] == 3 and "fingerprints differ" in table.warning.iloc[0]
    with pytest.raises(PairingError):
        single_run_disagreement(runs)
    with pytest.raises(ValueError, match="on_mismatch"):
        compare(runs, on_mismatch="ignore")


def test_data_order_mismatch_also_refused():
    runs = with_fps(make_runs({"a": [0.01, 0.02, 0.0]}))
    runs.loc[(runs.masker == "none") & (runs.seed == 0), "data_order_fp"] = "x"
    with pytest.raises(PairingError, match="data_order_fp"):
        compare(runs)


def test_missing_fingerprints_are_unaudited_not_refused():
    runs = with_fps(make_runs({"a": [0.01, 0.02, 0.0]}))
    runs.loc[runs.seed == 1, "head_init_fp"] = None
    audit = audit_pairing(runs).set_index("seed")
    assert audit.loc[1, "status"] == "unaudited" and audit.loc[0, "status"] == "ok"
    table = compare(runs, n_boot=100)
    assert table.n_pairs.iloc[0] == 3 and "1 pair(s) unaudited" in table.warning.iloc[0]
    # a frame without any fingerprint column is a deliberate minimal input: no warning text
    plain = compare(make_runs({"a": [0.01, 0.02, 0.0]}), n_boot=100)
    assert "unaudited" not in plain.warning.iloc[0]


def test_different_cuda_attention_kernels_are_a_mismatch():
    """env.attention_kernels (CUDA runs) must agree within a pair; CPU runs (none recorded) pass."""
    import json

    runs = with_fps(make_runs({"a": [0.01, 0.02, 0.0]}))
    runs["env"] = [json.dumps({"attention_kernels": ["efficient", "math"]}) for _ in runs.seed]
    runs.loc[runs.seed == 2, "env"] = json.dumps({"torch": "2.13"})  # a run without the record
    assert set(audit_pairing(runs).status) == {"ok"}
    runs.loc[(runs.masker == "a") & (runs.seed == 0), "env"] = json.dumps({"attention_kernels": ["flash"]})
    audit = audit_pairing(runs).set_index("seed")
    assert audit.loc[0, "status"] == "mismatch" and "attention kernels flash≠efficient,math" in audit.loc[0, "detail"]
    assert audit.loc[1, "status"] == "ok" and audit.loc[2, "status"] == "ok"
    with pytest.raises(PairingError, match="attention kernels"):
        compare(runs)


def test_disagreement_hand_computed():
    t = np.array([0.80, 0.82, 0.79, 0.81])
    b = np.array([0.79, 0.83, 0.78, 0.80])
    # d = [+1, -1, +1, +1] points, mean +0.5 pt (positive)
    s = disagreement_stats(t, b, win_threshold=0.005)
    assert s["estimate"] == pytest.approx(0.005)
    assert s["share_sign_disagree"] == pytest.approx(1 / 4)
    assert s["share_win"] == 1.0  # every |d| = 1 point >= 0.5
    assert s["share_win_opposite"] == pytest.approx(1 / 4)
    cross = [t[i] - b[j] for i in range(4) for j in range(4) if i != j]
    assert s["n_mismatched"] == 12
    assert s["share_sign_disagree_mismatched"] == pytest.approx(
        np.mean([np.sign(np.round(c, 12)) != 1 for c in cross]))
    assert s["share_win_mismatched"] == pytest.approx(
        np.mean([abs(c) >= 0.005 - 1e-12 for c in cross]))


def test_disagreement_edge_cases():
    one = disagreement_stats([0.8], [0.79])
    assert one["share_sign_disagree"] == 0 and np.isnan(one["share_sign_disagree_mismatched"])
    zero = disagreement_stats([0.8, 0.7, 0.6], [0.8, 0.7, 0.6])
    assert zero["share_sign_disagree"] == 0 and zero["share_win"] == 0


def test_single_run_disagreement_table():
    runs = make_runs({"a": [0.01, -0.01, 0.01, 0.01], "b": [0.0, 0.002, -0.001, 0.0]})
    dis = single_run_disagreement(runs, "none", win_threshold=0.005)
    assert list(dis.treatment) == ["a", "b"]
    assert dis.share_sign_disagree.iloc[0] == pytest.approx(0.25)
    assert dis.share_win.iloc[1] == 0 and (dis.win_threshold == 0.005).all()
