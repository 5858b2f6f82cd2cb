"""Generation runs in the analysis layer, from synthetic predictions frames of the form the
seq2seq task stores (example_id, generation, stats): the multibootstrap against a loop that
scores every resample with sacrebleu on the resampled generations, the per-seed paired tests
against sacrebleu's PairedTest, analyze() end to end, and classification output unchanged when
a generation task shares the frame."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from _analysis_testkit import small_study

from analysis import AnalysisWarning, analyze, compare, multibootstrap
from analysis import textmetrics as tm
from analysis._frames import stable_rng
from analysis.generation import paired_run_tests, run_stats
from analysis.multiboot import example_draws

sacrebleu = pytest.importorskip("sacrebleu")
WORDS = "the cat sat on a mat , . dog runs fast near blue house is was very".split()


def gen_study(metric="bleu", n=24, seeds=(0, 1, 2, 3), maskers=("none", "random"), task="e2e",
              same_refs=False, identical=()):
    """(runs, predictions, refs, sources): per run, hypotheses edited from the references
    with a masker- and seed-specific generator; 'random' edits less (a true improvement)."""
    rng = np.random.default_rng(7)
    refs, srcs = [], []
    for _ in range(n):
        k = 3 if same_refs else int(rng.integers(1, 4))
        refs.append([" ".join(rng.choice(WORDS, rng.integers(3, 10))) for _ in range(k)])
        srcs.append(" ".join(rng.choice(WORDS, rng.integers(3, 10))))
    run_rows, pred_rows = [], []
    for m_i, masker in enumerate(maskers):
        for s in seeds:
            r = np.random.default_rng([s, 0 if masker in identical else m_i])
            drop = 0.35 if masker == "none" or masker in identical else 0.2
            hyps = [" ".join(w for w in ref[0].split() if r.random() > drop) for ref in refs]
            stats = [tm.example_stats(metric, h, rf, sr) for h, rf, sr in zip(hyps, refs, srcs, strict=True)]
            run_rows.append({"task": task, "model": "m", "masker": masker, "seed": s,
                             "metric": metric, "value": tm.corpus_score(metric, stats) / 100,
                             "status": "done"})
            for i, (h, st) in enumerate(zip(hyps, stats, strict=True)):
                # the store keeps stats as JSON text; half the runs as lists, to read both
                pred_rows.append({"task": task, "model": "m", "masker": masker, "seed": s,
                                  "example_id": f"ex-{i:03d}", "generation": h,
                                  "stats": json.dumps(st) if s % 2 else st})
    preds = pd.DataFrame(pred_rows).sample(frac=1, random_state=1).reset_index(drop=True)
    return pd.DataFrame(run_rows), preds, refs, srcs


def test_run_stats_aligns_rows_by_example_id():
    runs, preds, refs, srcs = gen_study()
    stats, ids = run_stats(preds, "e2e")
    assert ids == [f"ex-{i:03d}" for i in range(24)]
    for (_, masker, seed), mat in stats.items():
        row = runs[(runs.masker == masker) & (runs.seed == seed)].iloc[0]
        assert tm.corpus_score("bleu", mat) == pytest.approx(100 * row.value, abs=1e-12)


def test_multibootstrap_equals_a_sacrebleu_loop_over_the_same_draws():
    runs, preds, refs, _ = gen_study()
    n_boot, seed = 40, 3
    mb = multibootstrap(preds, runs, baseline="none", n_boot=n_boot, seed=seed)
    assert len(mb) == 1 and mb.metric.iloc[0] == "bleu" and mb.n_examples.iloc[0] == 24
    # independent: sacrebleu on the drawn examples' generations, seed-averaged per resample
    text = {(m, s): g.sort_values("example_id")["generation"].tolist()
            for (m, s), g in preds.groupby(["masker", "seed"])}
    ex = np.concatenate(example_draws(seed, "e2e", n_boot, 24))
    seeds = [0, 1, 2, 3]
    si = stable_rng(seed, "multibootstrap-seeds", "e2e", "m", "random", "none").integers(
        0, 4, (n_boot, 4))

    def bleu(masker, s, d):
        hyps = [text[(masker, s)][i] for i in d]
        r = [refs[i] for i in d]
        k = max(len(x) for x in r)
        return sacrebleu.corpus_bleu(hyps, [[x[j] if j < len(x) else None for x in r]
                                            for j in range(k)]).score / 100  # metric units

    deltas = np.array([np.mean([bleu("random", seeds[j], d) for j in si[b]])
                       - np.mean([bleu("none", seeds[j], d) for j in si[b]])
                       for b, d in enumerate(ex)])
    row = mb.iloc[0]
    assert row.ci_low == pytest.approx(np.quantile(deltas, 0.025), abs=1e-9)
    assert row.ci_high == pytest.approx(np.quantile(deltas, 0.975), abs=1e-9)
    assert row.p_one_sided == pytest.approx(np.mean(deltas <= 0))
    table = compare(runs, baseline="none", n_boot=100)
    assert row.estimate == pytest.approx(table.estimate.iloc[0], abs=1e-9)
    assert row.estimate > 0  # 'random' drops fewer reference words


def test_gleu_multibootstrap_scores_each_draw_as_the_corpus_metric():
    runs, preds, refs, srcs = gen_study(metric="gleu", n=15, seeds=(0, 1, 2), same_refs=True)
    mb = multibootstrap(preds, runs, baseline="none", n_boot=6, seed=0)
    stats, _ = run_stats(preds, "e2e")
    ex = np.concatenate(example_draws(0, "e2e", 6, 15))
    si = stable_rng(0, "multibootstrap-seeds", "e2e", "m", "random", "none").integers(0, 3, (6, 3))
    deltas = [np.mean([tm.corpus_score("gleu", stats[("m", "random", j)][d]) for j in si[b]]) / 100
              - np.mean([tm.corpus_score("gleu", stats[("m", "none", j)][d]) for j in si[b]]) / 100
              for b, d in enumerate(ex)]
    assert mb.ci_low.iloc[0] == pytest.approx(np.quantile(deltas, 0.025), abs=1e-9)
    assert mb.estimate.iloc[0] == pytest.approx(compare(runs, n_boot=50).estimate.iloc[0], abs=1e-9)


def test_classification_rows_unchanged_beside_a_generation_task():
    c_runs, c_preds = small_study()
    g_runs, g_preds, _, _ = gen_study(task="e2e")
    g_runs = g_runs.assign(model="bert")
    g_preds = g_preds.assign(model="bert")
    alone = multibootstrap(c_preds, c_runs, baseline="none", n_boot=300, seed=4)
    runs = pd.concat([c_runs, g_runs], ignore_index=True)
    preds = pd.concat([c_preds, g_preds], ignore_index=True)  # label/prediction NaN on text rows
    with pytest.warns(AnalysisWarning, match="typhoon vs none not compared on e2e/bert"):
        both = multibootstrap(preds, runs, baseline="none", n_boot=300, seed=4)
    pd.testing.assert_frame_equal(both[both.task != "e2e"].reset_index(drop=True), alone)
    assert (both.task == "e2e").sum() == 1


def test_paired_run_tests_equal_sacrebleu_per_seed(monkeypatch):
    monkeypatch.setenv("SACREBLEU_SEED", "12345")
    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import PairedTest

    runs, preds, refs, _ = gen_study(identical=("random",), maskers=("none", "random", "tlm"))
    table = paired_run_tests(preds, runs, baseline="none", test="bs", n_samples=500)
    assert len(table) == 8 and set(table.seed) == {0, 1, 2, 3}
    k = max(len(r) for r in refs)
    ref_streams = [[r[j] if j < len(r) else None for r in refs] for j in range(k)]
    row = table[(table.treatment == "tlm") & (table.seed == 2)].iloc[0]
    text = {m: g.sort_values("example_id")["generation"].tolist()
            for m, g in preds[preds.seed == 2].groupby("masker")}
    _, scores = PairedTest([("none", text["none"]), ("tlm", text["tlm"])], {"BLEU": BLEU()},
                           ref_streams, test_type="bs", n_samples=500)()
    assert row.p_value == scores["BLEU"][1].p_value
    assert 100 * row.score_treatment == pytest.approx(scores["BLEU"][1].score, abs=1e-9)
    assert 100 * row.estimate == pytest.approx(scores["BLEU"][1].score - scores["BLEU"][0].score,
                                               abs=1e-9)
    # 'random' reproduces the baseline's outputs here: sacrebleu's floor p, flagged
    same = table[table.treatment == "random"]
    assert (same.p_value == 1 / 501).all() and same.warning.str.contains("identical").all()
    ar = paired_run_tests(preds, runs, comparisons=[("tlm", "none")], test="ar", n_samples=300)
    assert len(ar) == 4 and ar.method.iloc[0] == "paired approximate randomization"


def test_analyze_end_to_end_without_label_columns(tmp_path):
    from analysis.pipeline import write_result

    runs, preds, _, _ = gen_study()
    result = analyze(runs, preds, baseline="none", n_boot=200)
    assert result.multibootstrap.metric.iloc[0] == "bleu"
    assert result.multibootstrap.estimate.iloc[0] == pytest.approx(
        result.comparisons.estimate.iloc[0], abs=1e-9)
    assert result.collapsed.empty
    paired = result.tables()["paired_runs"]  # per seed: sacrebleu's paired bootstrap
    assert list(paired.seed) == [0, 1, 2, 3] and paired.method.eq("paired bootstrap").all()
    assert paired.estimate.mean() == pytest.approx(result.comparisons.estimate.iloc[0], abs=1e-12)
    files = write_result(result, tmp_path, figures=False)
    assert {"paired_runs.csv", "paired_runs.md", "paired_runs.tex"} <= set(files)
    assert "Treatment (pts)" in (tmp_path / "paired_runs.tex").read_text()


@pytest.mark.filterwarnings("ignore:typhoon vs none not compared on e2e")  # by design here
def test_generation_rows_are_not_judged_as_classifier_predictions():
    """Whatever the store puts in label/prediction for a text row (NULL, or a placeholder such
    as -1), analyze() does not judge a generation run as a classifier (one predicted class,
    or majority-level accuracy): its outputs here vary, so nothing collapsed."""
    runs, preds, _, _ = gen_study()
    c_runs, c_preds = small_study()
    c_runs = c_runs[c_runs.task == "mrpc"]
    c_preds = c_preds[c_preds.task == "mrpc"]
    flat = c_preds.assign(prediction=0)  # the check still fires on classification rows
    assert len(analyze(c_runs, flat, baseline="none", n_boot=50).collapsed) == len(c_runs)
    for placeholder in (np.nan, -1):
        both = pd.concat([c_preds, preds.assign(label=placeholder, prediction=placeholder)],
                         ignore_index=True)
        result = analyze(pd.concat([c_runs, runs], ignore_index=True), both, baseline="none",
                         n_boot=50)
        assert "e2e" not in set(result.collapsed.get("task", []))
        assert "e2e" in set(result.multibootstrap.task)


def test_classification_analysis_has_no_paired_runs_table():
    runs, preds = small_study()
    assert "paired_runs" not in analyze(runs, preds, baseline="none", n_boot=100).tables()


def test_bad_generation_frames_name_the_run_and_the_fix():
    runs, preds, _, _ = gen_study()
    holes = preds.copy()
    holes.loc[(holes.masker == "random") & (holes.seed == 1) & (holes.example_id == "ex-004"), "stats"] = None
    with pytest.raises(ValueError, match=r"e2e/m/random/seed 1: 1 example\(s\) without stats"):
        multibootstrap(holes, runs, baseline="none", n_boot=10)
    short = preds.drop(preds[(preds.masker == "none") & (preds.seed == 0)].index[:3])
    with pytest.raises(ValueError, match="e2e/m/none/seed 0: predictions cover 21 of the 24"):
        multibootstrap(short, runs, baseline="none", n_boot=10)
    with pytest.raises(ValueError, match=r"e2e: a generation task.s predictions need column\(s\) \[.stats.\]"):
        multibootstrap(preds.drop(columns="stats"), runs, baseline="none", n_boot=10)
    with pytest.raises(KeyError, match="Did you mean 'bleu'|did you mean 'bleu'"):
        multibootstrap(preds, runs.assign(metric="blue"), baseline="none", n_boot=10)
