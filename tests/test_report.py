"""The PDF report from a store alone: every section, failures, collapsed runs, Typhoon saliency."""

from __future__ import annotations

import numpy as np
import pandas as pd
from conftest import tiny_protocol_dict, write_protocol
from pypdf import PdfReader

from analysis.collapse import single_class_runs
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
            value = 0.5 + 0.01 * spec.seed + (0.02 if spec.masker["name"] == "typhoon" else 0.0)
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
                         maskers: dict | None = None):
    """A store holding ``analysis.synthetic_study`` results for tasks x models x maskers x 5 seeds
    (by default none / random / typhoon: two comparisons per cell), as real RunResults."""
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
    return " ".join(page.extract_text() for page in PdfReader(path).pages).replace("\n", " ")


def test_report_has_every_section_and_flags_problems(tmp_path):
    p = synthetic_store(tmp_path)
    out = write_report(p, tmp_path / "r" / "report.pdf")
    reader = PdfReader(out)
    text = " ".join(page.extract_text() for page in reader.pages).replace("\n", " ")
    for heading in ("1. Summary", "2. Design", "3. Results", "4. Comparisons", "5. Per-seed detail", "6. Power",
                    "7. What a single run", "8. Audit", "Appendix: every run"):
        assert heading in text, heading
    assert "9 done, 1 failed" in text
    assert "1 of 9 runs predicted a single class" in text
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


def test_single_class_runs():
    preds = pd.DataFrame({"task": "t", "model": "m", "masker": ["a"] * 3 + ["b"] * 3, "seed": 0,
                          "prediction": [1, 1, 1, 0, 1, 0]})
    out = single_class_runs(preds)
    assert out.masker.tolist() == ["a"] and out.predicted_class.tolist() == [1]
