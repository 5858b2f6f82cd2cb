"""The PDF report from a store alone: every section, failures, collapsed runs, Typhoon saliency."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from protocoltools import tiny_protocol_dict, write_protocol
from pypdf import PdfReader

from analysis.collapse import collapsed_runs
from analysis.synthetic import synthetic_study
from study.protocol import load_protocol
from study.report import write_report
from study.results import RunResult
from study.spec import expand
from study.store import Store


def synthetic_store(tmp_path):
    """Two maskers × 5 seeds with known scores; one run failed, one collapsed to one class."""
    data = tiny_protocol_dict(seeds={"start": 0, "count": 5}, store=str(tmp_path / "s.sqlite"))
    data["maskers"] = [{"name": "none", "kind": "none"}, {"name": "typhoon", "kind": "typhoon", "rate": 0.15}]
    data["analysis"] = {"baseline": "none", "margin": 0.01, "n_boot": 500}
    path = write_protocol(tmp_path, data)
    p = load_protocol(path)
    specs = expand(p)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 40)  # one evaluation set, the same for every run
    with Store(p.store_path) as store:
        store.register(specs)
        for spec in specs:
            if spec.seed == 4 and spec.masker["name"] == "typhoon":
                store.mark_running(spec.run_id, "h")
                store.record_failure(spec.run_id, "worker exited with code 1",
                                     "Traceback...\nRuntimeError: saliency hook saw no gradient", final=True)
                continue
            collapsed = spec.seed == 0 and spec.masker["name"] == "none"
            preds = np.zeros(40, int) if collapsed else np.where(rng.random(40) < 0.7, labels, (labels + 1) % 3)
            # paired differences 0.02 / 0.024 (not constant: a zero-variance comparison gets no verdict)
            value = 0.5 + 0.01 * spec.seed + (0.02 + 0.004 * (spec.seed % 2) if spec.masker["name"] == "typhoon" else 0.0)
            store.record_result(RunResult(
                run_id=spec.run_id, primary_metric="macro_f1", final_metrics={"macro_f1": value, "accuracy": 0.6},
                epochs=[{"epoch": 1, "train_loss": 1.0, "metrics": {"macro_f1": value, "accuracy": 0.6}}],
                predictions=[[f"dev-{i}", int(y), int(q), 0.9] for i, (y, q) in enumerate(zip(labels, preds, strict=True))],
                wall_time_s=1.0, train_time_s=1.0, train_examples_per_s=10.0,
                realised_mask_rate=0.15 if spec.masker["kind"] == "typhoon" else None,
                fingerprints={"data": "d", "data_order": f"o{spec.seed}", "head_init": f"h{spec.seed}"},
                masker_stats={}, env={"device": "cpu", "torch": "2.13.0", "determinism": {"deterministic": False}},
                masker_state={"top_salient": [["great", 1.0], ["awful", 0.9]], "least_salient": [["the", 0.0]]}
                if spec.masker["kind"] == "typhoon" else {}))
    return p


def synthetic_grid_store(tmp_path, tasks: dict, models: tuple, n_examples: int = 200, seed: int = 1,
                         maskers: dict | None = None, done: tuple | None = None):
    """A store holding ``analysis.synthetic_study`` results for tasks x models x maskers x 5 seeds
    (by default none / random / typhoon: two comparisons per cell), as real RunResults.
    ``done``: record only these maskers' runs (the others stay pending)."""
    maskers = maskers or {"none": 0.0, "random": 0.02, "typhoon": 0.02}
    kinds = {"none": {"kind": "none"}, "random": {"kind": "random-token", "rate": 0.15},
             "typhoon": {"kind": "typhoon", "rate": 0.15}}
    runs, preds = synthetic_study(tasks=tasks, models=models, maskers=maskers, n_examples=n_examples, seed=seed)
    data = tiny_protocol_dict(seeds={"start": 0, "count": 5}, store=str(tmp_path / "grid.sqlite"))
    # run_ids hash what changes a result, not names: each task and model differs in a setting
    data["tasks"] = [{"name": t, "dataset": "tweets-sentiment", "max_train_examples": 40 + i}
                     for i, t in enumerate(tasks)]
    data["models"] = [{"name": m, "source": "builtin:minilm-l6", "num_hidden_layers": 1 + i}
                      for i, m in enumerate(models)]
    data["maskers"] = [{"name": m, **kinds[m]} for m in maskers]
    data["analysis"] = {"baseline": "none", "margin": 0.01, "n_boot": 300}
    p = load_protocol(write_protocol(tmp_path, data, "grid.yaml"))
    by_cell = runs.set_index(["task", "model", "masker", "seed"])
    pred_of = dict(tuple(preds.groupby(["task", "model", "masker", "seed"])))
    with Store(p.store_path) as store:
        store.register(expand(p))
        for spec in expand(p):
            key = (spec.task["name"], spec.model["name"], spec.masker["name"], spec.seed)
            if done is not None and spec.masker["name"] not in done:
                continue
            r, pr = by_cell.loc[key], pred_of[key]
            metrics = {r["metric"]: float(r["value"]), "accuracy": float(r["accuracy"])}
            store.record_result(RunResult(
                run_id=spec.run_id, primary_metric=r["metric"], final_metrics=metrics,
                epochs=[{"epoch": 1, "train_loss": 1.0, "metrics": metrics}],
                predictions=[[f"ex-{i}", int(y), int(q), 0.9]
                             for i, y, q in zip(pr.example_id, pr.label, pr.prediction, strict=True)],
                wall_time_s=1.0, train_time_s=1.0, train_examples_per_s=10.0,
                realised_mask_rate=None if spec.masker["kind"] == "none" else 0.15,
                fingerprints={"data": "d", "data_order": f"o{spec.seed}", "head_init": f"h{spec.seed}"},
                masker_stats={}, env={"device": "cpu"}, masker_state={}))
    return p


def pdf_text(path) -> str:
    """The PDF's text, whitespace collapsed; Helvetica's Delta extracts as U+2206, read back as U+0394."""
    return " ".join(" ".join(page.extract_text() for page in PdfReader(path).pages).split()).replace("\u2206", "Δ")


def test_report_has_every_section_and_flags_problems(tmp_path):
    p = synthetic_store(tmp_path)
    out = write_report(p, tmp_path / "r" / "report.pdf")
    reader = PdfReader(out)
    text = " ".join(page.extract_text() for page in reader.pages).replace("\n", " ")
    for heading in ("1. Summary", "2. Design", "3. Results", "4. Comparisons", "5. Per-seed detail", "6. Power",
                    "7. What a single run", "8. Audit", "Appendix: every run"):
        assert heading in text, heading
    assert "9 done, 1 failed" in text
    assert "1 of 9 runs collapsed (1 single class" in text
    assert "saliency hook saw no gradient" in text  # the failed run's error
    assert "great (4)" in text and "the (4)" in text  # Typhoon's salient types over 4 runs
    assert f"page {len(reader.pages)}" in text
    assert not (tmp_path / "r" / "report.pdf.tmp").exists()


def test_uninformative_comparisons_need_every_run_collapsed():
    from analysis.collapse import uninformative_comparisons

    runs = pd.DataFrame({"task": "t", "model": "m", "masker": ["a", "a", "b", "b", "c", "c"], "seed": [0, 1] * 3})
    comps = pd.DataFrame({"task": "t", "model": "m", "treatment": ["b", "c"], "baseline": ["a", "a"]})
    collapsed = runs[runs.masker.isin(["a", "b"]) | ((runs.masker == "c") & (runs.seed == 0))]
    assert uninformative_comparisons(comps, runs, collapsed) == ["t/m: b vs a"]


def test_collapsed_runs_name_each_criterion():
    """One definition (analysis.collapse): a single class, or an accuracy within 2 binomial SE of the
    majority class's; the criteria are columns. Labels 0,1,0,1,0,1 (majority 0.5, SE bound 0.908):
    'a' predicts one class; 'b' scores 4/6 = 0.667, within noise; 'c' is right on all 6."""
    labels = [0, 1] * 3
    preds = pd.DataFrame({"task": "t", "model": "m", "masker": ["a"] * 6 + ["b"] * 6 + ["c"] * 6, "seed": 0,
                          "label": labels * 3, "prediction": [1] * 6 + [0, 1, 0, 1, 1, 0] + labels})
    out = collapsed_runs(preds).set_index("masker")
    assert out.loc["a", "single_class"] and out.loc["a", "predicted_class"] == 1
    assert not out.loc["b", "single_class"] and out.loc["b", "near_majority"] and out.loc["b", "collapsed"]
    assert not out.loc["c", "collapsed"] and out.loc["c", "accuracy"] == 1.0
    gens = pd.DataFrame({"run_id": ["x"] * 2 + ["y"] * 2, "generation": ["same", "same", "one", "two"]})
    flags = collapsed_runs(generations=gens).set_index("run_id")
    assert flags.loc["x", "single_output"] and flags.loc["x", "collapsed"] and not flags.loc["y", "collapsed"]


def study_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "study.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_report_of_twelve_comparisons_reads_like_a_paper(tmp_path):
    p = synthetic_grid_store(tmp_path, {"mrpc": "f1", "cola": "mcc"}, ("bert", "roberta", "electra"))
    text = pdf_text(write_report(p, tmp_path / "report.pdf"))
    assert "0 of 12 comparisons significant" in text
    for raw in ("boot_ci_low", "mean_diff", "p_ttest", "n_pairs", "p_hksj", "0.0000"):
        assert raw not in text, raw  # human headers, no 4-decimal zeros
    for header in ("Δ (pts)", "95% CI (pts)", "95% BCa CI (pts)", "p (t-test)", "adjusted p", "p (multiboot)",
                   "Seeds for 0.5 pt", "Sign differs (same seed)"):
        assert header in text, header
    assert "Caveat. With 5 paired seeds" in text
    assert "60 of 60 seed pairs audited ok" in text
    for part in ("Bayesian probabilities", "P(better)", "P(in ROPE)", "Across tasks and models",
                 "3 cells (f1)", "3 cells (mcc)", "95% PI (pts)", "p (HKSJ)"):
        assert part in text, part
    out = study_cli("analyze", p.source, "--out", tmp_path / "tables")
    assert out.returncode == 0, out.stderr
    for name in ("across", "bayes"):
        for ext in ("md", "csv", "tex"):
            assert (tmp_path / "tables" / f"{name}.{ext}").stat().st_size > 0, (name, ext)
    across = pd.read_csv(tmp_path / "tables" / "across.csv")
    # f1 and mcc cells are pooled apart: one row per comparison and metric
    assert list(across.treatment) == ["random", "random", "typhoon", "typhoon"]
    assert list(across.metric) == ["f1", "mcc"] * 2 and set(across.n_cells) == {3}
    assert "Across 3 cells (f1), typhoon vs none" in (tmp_path / "tables" / "summary.txt").read_text()


def test_analyze_prints_and_writes_the_same_caveats(tmp_path):
    """summary.txt and the terminal carry the collapse caveat and the pairing verdict from the result."""
    p = synthetic_store(tmp_path)
    out = study_cli("analyze", p.source, "--out", tmp_path / "tables")
    assert out.returncode == 0, out.stderr
    summary = (tmp_path / "tables" / "summary.txt").read_text()
    assert "1 of 9 runs collapsed (1 single class" in summary
    assert "pairing: 4 of 5 seed pairs audited ok" in summary  # seed 4 lacks its typhoon run
    assert "The multibootstrap does not confirm 1 of 1" in summary
    assert "warning: " in summary and "seed" in summary  # the seed the failed run left unpaired
    assert summary.strip() in out.stdout
    for name in ("comparisons", "multibootstrap", "power", "disagreement", "variance", "cells", "audit"):
        tex = (tmp_path / "tables" / f"{name}.tex").read_text()
        assert r"\toprule" in tex and r"\bottomrule" in tex, name
    mb_tex = (tmp_path / "tables" / "multibootstrap.tex").read_text()
    assert r"\begin{tabular}{lllll" in mb_tex  # text columns left, numbers right


def test_nothing_to_compare_gives_cell_spread(tmp_path):
    """Only the baseline's runs are done: analyze and report exit 0 with mean, sd, min, max per cell,
    and name the masker without a finished run (not "the study has one masker")."""
    p = synthetic_grid_store(tmp_path, {"mrpc": "f1"}, ("bert", "roberta"), maskers={"none": 0.0, "random": 0.02},
                             done=("none",))
    out = study_cli("analyze", p.source, "--out", tmp_path / "tables")
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    assert "Nothing compared: random: 0 of 10 runs done — not compared; only none has finished runs" in out.stdout
    assert "one masker" not in out.stdout
    cells = pd.read_csv(tmp_path / "tables" / "cells.csv")
    runs, _ = synthetic_study(tasks={"mrpc": "f1"}, models=("bert", "roberta"),
                              maskers={"none": 0.0, "random": 0.02}, n_examples=200, seed=1)
    for row in cells.itertuples():
        v = runs[(runs.model == row.model) & (runs.masker == "none")]["value"].to_numpy()
        assert row.n_seeds == 5 and row.masker == "none"
        assert (row.mean, row.sd, row.min, row.max) == pytest.approx((v.mean(), v.std(ddof=1), v.min(), v.max()))
    assert not (tmp_path / "tables" / "comparisons.csv").exists()
    rep = study_cli("report", p.source, "--out", tmp_path / "r.pdf")
    assert rep.returncode == 0, rep.stderr
    text = pdf_text(tmp_path / "r.pdf")
    assert "random: 0 of 10 runs done — not compared" in text
    assert "4. Seed spread" in text and "Seed spread per cell" in text


def test_a_treatment_whose_runs_all_failed_is_named(tmp_path):
    """random's runs all failed: the terminal, summary.txt and the tables name it; typhoon is compared."""
    p = synthetic_grid_store(tmp_path, {"mrpc": "f1"}, ("bert",), done=("none", "typhoon"))
    with Store(p.store_path) as store:
        for spec in expand(p):
            if spec.masker["name"] == "random":
                store.mark_running(spec.run_id, "h")
                store.record_failure(spec.run_id, "worker exited with code 1", "RuntimeError: boom", final=True)
    out = study_cli("analyze", p.source, "--out", tmp_path / "tables")
    assert out.returncode == 0, out.stderr
    said = "random: 0 of 5 runs done (5 failed) — not compared"
    assert said in out.stdout and said in (tmp_path / "tables" / "summary.txt").read_text()
    assert "1 of 1 comparison" in out.stdout or "0 of 1 comparison" in out.stdout
    comps = pd.read_csv(tmp_path / "tables" / "comparisons.csv")
    assert list(comps.treatment) == ["typhoon"]


def test_multibootstrap_disagreement_is_explained():
    from analysis.caveats import multiboot_disagreement

    keys = {"task": "t", "model": "m", "treatment": "a", "baseline": "none"}
    comps = pd.DataFrame([keys | {"p_ttest": 0.095}])
    mb = pd.DataFrame([keys | {"p_boot": 0.0, "n_pairs": 3}])
    (note,) = multiboot_disagreement(comps, mb, alpha=0.05)
    assert "multibootstrap p < 0.001, paired t-test p = 0.095" in note and "under-covers" in note
    assert "calls 1 of 1 comparisons significant that the seed-level t-test does not" in note
    assert multiboot_disagreement(comps, mb.assign(p_boot=0.2), alpha=0.05) == []


def test_p_values_and_points_display():
    from analysis.display import display_frame, fmt_p

    assert [fmt_p(p) for p in (0.0, 0.0004, 0.001, 0.0954, float("nan"))] == ["< 0.001", "< 0.001", "0.001",
                                                                             "0.095", "–"]
    df = pd.DataFrame({"task": ["t"], "model": ["m"], "treatment": ["a"], "baseline": ["b"], "estimate": [-0.0123],
                       "ci_low": [-0.02], "ci_high": [0.001], "level": [0.9], "p_adj": [1e-5]})
    shown = display_frame(df)
    assert list(shown.columns) == ["Task / model", "Comparison", "Δ (pts)", "90% CI (pts)", "Level", "adjusted p"]
    assert shown.iloc[0].tolist() == ["t / m", "a vs b", "−1.23", "[−2.00, 0.10]", "90%", "< 0.001"]
