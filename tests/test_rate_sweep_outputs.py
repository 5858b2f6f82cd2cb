"""A rate sweep through the real store, `study analyze` and `study report` (issue 20 §4): the
runs frame's rate column, the many_to_one / best / rate_response tables on disk, the summary
sentences and the report's "Rate sweep" section."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from protocoltools import study_cli, tiny_protocol_dict, write_protocol
from pypdf import PdfReader

from study.protocol import load_protocol
from study.results import RunResult
from study.spec import expand
from study.store import Store

RATES = (0.1, 0.2, 0.3, 0.4)
OPTIMUM = {"minilm-l1": 0.15, "minilm-l2": 0.3}


def sweep_store(tmp_path, n_seeds=6):
    """none + random-token at 4 rates, two models whose optimum differs, 6 seeds; values from a
    known curve, recorded as real RunResults."""
    data = tiny_protocol_dict(seeds={"start": 0, "count": n_seeds}, store=str(tmp_path / "sweep.sqlite"))
    data["models"] = [{"name": m, "source": "builtin:minilm-l6", "num_hidden_layers": i + 1}
                      for i, m in enumerate(OPTIMUM)]
    data["maskers"] = [{"name": "p0.0", "kind": "none"}] + [
        {"name": f"p{r}", "kind": "random-token", "rate": r} for r in RATES]
    data["analysis"] = {"baseline": "p0.0", "alpha": 0.05, "n_boot": 300,
                        "model_sizes": {"minilm-l1": "1.37e7", "minilm-l2": 15467520}}
    p = load_protocol(write_protocol(tmp_path, data, "sweep.yaml"))
    rng = np.random.default_rng(0)
    seed_effect = {(m, s): 0.02 * rng.standard_normal() for m in OPTIMUM for s in range(n_seeds)}
    labels = rng.integers(0, 2, 30)
    with Store(p.store_path) as store:
        store.register(expand(p))
        for spec in expand(p):
            model, rate = spec.model["name"], spec.masker.get("rate", 0.0)
            value = (0.7 + seed_effect[model, spec.seed]
                     + 0.04 * (1 - ((rate - OPTIMUM[model]) / 0.3) ** 2) + 0.004 * rng.standard_normal())
            store.record_result(RunResult(
                run_id=spec.run_id, primary_metric="macro_f1", final_metrics={"macro_f1": value},
                epochs=[{"epoch": 1, "train_loss": 1.0, "metrics": {"macro_f1": value}}],
                predictions=[[f"e{i}", int(y), int(y), 0.9] for i, y in enumerate(labels)],
                wall_time_s=1.0, train_time_s=1.0, train_examples_per_s=10.0, realised_mask_rate=rate,
                fingerprints={"data": "d", "data_order": f"o{spec.seed}", "head_init": f"h{spec.seed}"},
                masker_stats={}, env={"device": "cpu"}, masker_state={}))
    return p


def test_runs_frame_carries_rate_and_sweep(tmp_path):
    p = sweep_store(tmp_path, n_seeds=2)
    with Store(p.store_path) as store:
        runs = store.load_runs(expand(p))
    by = runs.drop_duplicates("masker").set_index("masker")
    assert by.loc["p0.0", "rate"] == 0.0 and by.loc["p0.3", "rate"] == 0.3
    assert set(by["sweep"]) == {"none", "random-token"}


@pytest.mark.filterwarnings("ignore::analysis.AnalysisWarning")
def test_analyze_and_report_give_the_sweep(tmp_path):
    p = sweep_store(tmp_path)
    out = study_cli("analyze", p.source, "--out", tmp_path / "tables", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    tables = tmp_path / "tables"
    for name in ("many_to_one", "best", "rate_response", "rate_interaction"):
        for ext in ("md", "csv", "tex"):
            assert (tables / f"{name}.{ext}").stat().st_size > 0, (name, ext)
    rate = pd.read_csv(tables / "rate_response.csv")
    assert list(rate.model) == list(OPTIMUM)
    for r in rate.itertuples():
        assert r.optimum_low <= OPTIMUM[r.model] <= r.optimum_high
    inter = pd.read_csv(tables / "rate_interaction.csv")
    assert list(inter.term) == ["rate x model", "rate x log n_params"]  # model_sizes given
    assert (inter.p_interaction < 0.001).all()  # the optimum moves: 0.15 vs 0.30
    many = pd.read_csv(tables / "many_to_one.csv")
    assert list(many.columns[:4]) == ["task", "model", "treatment", "baseline"]
    assert {"p_maxt", "p_adj", "p_holm", "ci_low", "ci_high", "level", "n_pairs", "method"} <= set(many)
    assert len(many) == 2 * len(RATES)
    best = pd.read_csv(tables / "best.csv")
    assert best.groupby("model").in_best_set.any().all()
    summary = (tables / "summary.txt").read_text()
    for part in ("Max-T over the treatments of each cell", "Could be best (95% set, Hsu's MCB)",
                 "Rate response (95% intervals): optimum rate", "does the response differ between models?",
                 "does it move with log model size?"):
        assert part in summary and part in out.stdout, part
    rep = study_cli("report", p.source, "--out", tmp_path / "r.pdf", cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr
    text = " ".join(" ".join(pg.extract_text() for pg in PdfReader(tmp_path / "r.pdf").pages).split())
    for part in ("Rate sweep", "Optimum rate", "95% CI of optimum", "In best set", "p (max-T)", "p (Holm)",
                 "p (interaction)"):
        assert part in text, part


@pytest.mark.parametrize("sizes, problem", [
    ({"minilm-l3": 1e7}, "analysis.model_sizes.minilm-l3: 'minilm-l3' is not a model of this protocol"),
    ({"minilm-l1": -5}, "analysis.model_sizes.minilm-l1: must be a positive parameter count"),
    ({"minilm-l1": "big"}, "analysis.model_sizes.minilm-l1: expected a number"),
])
def test_bad_model_sizes_are_refused(tmp_path, sizes, problem):
    data = tiny_protocol_dict()
    data["analysis"] = {"baseline": "none", "model_sizes": sizes}
    out = study_cli("validate", write_protocol(tmp_path, data), cwd=tmp_path)
    assert out.returncode == 2 and problem in out.stderr and "Traceback" not in out.stderr
