"""task_type: seq2seq — data (grouped references), models (tiny random T5 and BART, the warm-started
MiniLM encoder-decoder), training and generation, the store and export, bad input, and a whole
study through the CLI. BLEU in the store is checked against sacrebleu on the exported files."""

from __future__ import annotations

import json
import sqlite3

import pandas as pd
import pytest
import sacrebleu
from protocoltools import SHARED_DATA, study_cli, write_protocol
from seq2seqtools import mr_rows, tiny_seq2seq, write_csv

from analysis.textmetrics import corpus_score
from study.protocol import parse_protocol
from study.spec import expand
from study.tasks import load_task
from study.tasktypes.seq2seq import reference_levels


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("s2s")
    write_csv(d / "train.csv", mr_rows(16))
    write_csv(d / "eval.csv", mr_rows(6, offset=100))
    return d


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    return {kind: tiny_seq2seq(kind, d / kind) for kind in ("t5", "bart")}


def protocol(d, model: dict, maskers=None, seeds=(0,), **task) -> dict:
    return {
        "name": "s2s", "seeds": list(seeds), "store": str(d / "runs" / "s2s.sqlite"),
        "tasks": [{"name": "mr", "dataset": "file", "task_type": "seq2seq", "train_file": str(d / "train.csv"),
                   "eval_file": str(d / "eval.csv"), "source_field": "mr", "target_field": "ref", **task}],
        "models": [model],
        "maskers": maskers or [{"name": "none", "kind": "none"}],
        "training": {"epochs": 1, "batch_size": 8, "learning_rate": 1.0e-3, "max_length": 32},
        "analysis": {"baseline": "none", "n_boot": 200, "margin": 0.01},  # 1 BLEU point
        "execution": {"threads_per_run": 1},
    }


def test_references_are_grouped_by_source_from_rows_or_lists(data, tmp_path):
    task = load_task(parse_protocol(protocol(data, {"name": "m", "source": "builtin:minilm-l6",
                                                   "decoder": "builtin:minilm-l6"})).tasks[0])
    assert len(task.train) == 16 and len(task.eval) == 6
    assert all(len(e.references) == 2 for e in task.train + task.eval)
    assert task.eval[0].references[0].startswith("Zizzi serves")  # mr 100: NAMES[100 % 6]
    # the same data as JSON lines with a list-valued target: the same examples
    rows = {}
    for mr, ref in mr_rows(16):
        rows.setdefault(mr, []).append(ref)
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps({"src": k, "tgt": v}) for k, v in rows.items()))
    p = protocol(data, {"name": "m", "source": "builtin:minilm-l6", "decoder": "builtin:minilm-l6"},
                 train_file=str(tmp_path / "train.jsonl"), source_field="src", target_field="tgt")
    p["tasks"][0]["eval_file"] = str(data / "eval.csv")
    with pytest.raises(Exception, match="source_field"):  # eval.csv has mr/ref, not src/tgt
        load_task(parse_protocol(p).tasks[0])
    write_csv(tmp_path / "eval.csv", mr_rows(6, offset=100), header=("src", "tgt"))
    p["tasks"][0]["eval_file"] = str(tmp_path / "eval.csv")
    listed = load_task(parse_protocol(p).tasks[0])
    assert [e.references for e in listed.train] == [e.references for e in task.train]
    assert [e.text_a for e in listed.train] == [e.text_a for e in task.train]


def test_trivial_systems_scored_with_sacrebleu(data):
    task = load_task(parse_protocol(protocol(data, {"name": "m", "source": "builtin:minilm-l6",
                                                   "decoder": "builtin:minilm-l6"})).tasks[0])
    levels = reference_levels("bleu", task.train, task.eval)
    refs = [[e.references[k] for e in task.eval] for k in range(2)]
    assert 100 * levels["copy source"] == pytest.approx(
        sacrebleu.corpus_bleu([e.text_a for e in task.eval], refs).score, abs=1e-9)


@pytest.mark.parametrize("kind", ["t5", "bart"])
def test_tiny_random_encoder_decoders_train_and_generate(kind, data, tiny_models):
    from study.train import run_one

    p = protocol(data, {"name": kind, "source": str(tiny_models[kind])},
                 maskers=[{"name": "none", "kind": "none"}, {"name": "r", "kind": "random-token", "rate": 0.3}],
                 generation={"num_beams": 2, "max_new_tokens": 6})
    specs = expand(parse_protocol(p))
    none, masked = (run_one(s) for s in specs)
    for r in (none, masked):
        assert len(r.generations) == 6 and len(r.references) == 12
        # metric units (points / 100), as every analysis frame
        assert 100 * r.final_metrics["bleu"] == pytest.approx(corpus_score("bleu", [s for _, _, s in r.generations]),
                                                              abs=1e-10)
        assert r.env["metric_signature"].startswith("nrefs:2|case:mixed")
    assert masked.realised_mask_rate > 0.1 and none.realised_mask_rate in (0.0, None)
    assert none.fingerprints == masked.fingerprints  # same seed: same data order and new weights


def test_generation_settings_enter_the_run_id_only_when_given(data):
    model = {"name": "m", "source": "builtin:minilm-l6", "decoder": "builtin:minilm-l6"}
    plain = expand(parse_protocol(protocol(data, model)))[0]
    beams = expand(parse_protocol(protocol(data, model, generation={"num_beams": 4})))[0]
    assert plain.run_id != beams.run_id
    assert "generation" not in plain.hashed_content()["task"]


def test_lowercase_scores_the_uncased_model_as_sacrebleus_lowercase_option(data, tmp_path):
    """tasks[].lowercase: the warm-started (uncased) MiniLM's lower-case generations against
    references in capitals. The stored BLEU equals sacrebleu's ``BLEU(lowercase=True)`` on the
    run's generations and references to 1e-9, the cased score of the same generations is lower,
    the signature says case:lc, and the option enters the run_id only when set."""
    model = {"name": "minilm-ed", "source": "builtin:minilm-l6", "decoder": "builtin:minilm-l6",
             "num_hidden_layers": 1}
    shout = {"train_file": str(write_csv(tmp_path / "train.csv", [(m, r.upper()) for m, r in mr_rows(16)])),
             "eval_file": str(write_csv(tmp_path / "eval.csv", [(m, r.upper()) for m, r in mr_rows(6, offset=100)]))}
    plain = expand(parse_protocol(protocol(data, model, **shout)))[0]
    spec = expand(parse_protocol(protocol(data, model, lowercase=True, **shout)))[0]
    assert spec.run_id != plain.run_id and "lowercase" not in plain.hashed_content()["task"]
    from study.train import run_one

    r = run_one(spec)
    gen = [text for _, text, _ in r.generations]
    refs = {}
    for example_id, k, text in r.references:
        refs.setdefault(example_id, {})[k] = text
    streams = [[refs[i][k] for i, _, _ in r.generations] for k in range(2)]
    lowered = sacrebleu.BLEU(lowercase=True).corpus_score(gen, streams).score
    assert 100 * r.final_metrics["bleu"] == pytest.approx(lowered, abs=1e-9)
    assert lowered > sacrebleu.corpus_bleu(gen, streams).score + 1  # the references' capitals count as misses
    assert r.env["metric_signature"].startswith("nrefs:2|case:lc|eff:no|tok:13a")
    task = load_task(parse_protocol(protocol(data, model, lowercase=True, **shout)).tasks[0])
    copied = reference_levels("bleu", task.train, task.eval, lowercase=True)["copy source"]
    assert 100 * copied == pytest.approx(sacrebleu.BLEU(lowercase=True).corpus_score(
        [e.text_a for e in task.eval], [[e.references[k] for e in task.eval] for k in range(2)]).score, abs=1e-9)


def test_eval_epochs_last_generates_once_with_the_same_result(data, tiny_models):
    """training.eval_epochs: last — the eval split is scored after the last epoch only; evaluation
    never changes training, so the result (metrics, generations, losses) is that of a run scoring
    every epoch."""
    from study.train import run_one

    runs = {}
    for when in ("all", "last"):
        p = protocol(data, {"name": "t5", "source": str(tiny_models["t5"])}, generation={"max_new_tokens": 6})
        p["training"].update(epochs=2, eval_epochs=when)
        runs[when] = run_one(expand(parse_protocol(p))[0])
    every, last = runs["all"], runs["last"]
    assert every.run_id != last.run_id
    assert last.epochs[0]["metrics"] == {} and every.epochs[0]["metrics"]
    assert last.final_metrics == every.final_metrics and last.generations == every.generations
    assert [e["train_loss"] for e in last.epochs] == [e["train_loss"] for e in every.epochs]


def test_minilm_encoder_decoder_study_through_the_cli_matches_sacrebleu(data, tmp_path):
    """validate → run → analyze → report → export of a tiny study with the warm-started 2-layer
    MiniLM encoder-decoder; the stored BLEU equals sacrebleu's corpus_bleu on the exported
    generations and references."""
    model = {"name": "minilm-ed", "source": "builtin:minilm-l6", "decoder": "builtin:minilm-l6",
             "num_hidden_layers": 1}
    p = protocol(tmp_path, model, seeds=(0, 1),
                 maskers=[{"name": "none", "kind": "none"}, {"name": "r", "kind": "random-token", "rate": 0.15}])
    p["tasks"][0].update(train_file=str(data / "train.csv"), eval_file=str(data / "eval.csv"))
    path = write_protocol(tmp_path, p)
    for args in (("validate", path), ("run", path), ("analyze", path), ("report", path), ("export", path)):
        out = study_cli(*args, cwd=tmp_path)
        assert out.returncode == 0, (args, out.stdout, out.stderr)
    export = tmp_path / "reports" / "s2s" / "export"
    preds = pd.read_csv(export / "predictions.csv", keep_default_na=False)
    refs = pd.read_csv(export / "references.csv", keep_default_na=False)
    assert set(refs.columns) == {"task", "example_id", "ref_index", "text"} and len(refs) == 12
    runs = pd.read_csv(export / "runs.csv")
    assert len(runs) == 4 and (runs["primary_metric"] == "bleu").all()
    by_example = refs.sort_values(["example_id", "ref_index"]).groupby("example_id")["text"].apply(list)
    best = 0.0
    for run in runs.itertuples():
        gen = preds[preds["run_id"] == run.run_id].set_index("example_id").loc[by_example.index, "generation"]
        ref_streams = [[r[k] for r in by_example] for k in range(2)]
        assert 100 * run.value == pytest.approx(sacrebleu.corpus_bleu(list(gen), ref_streams).score, abs=1e-9)
        best = max(best, run.value)
    assert best > 0.01  # not the trivial 0 = 0: the generations share n-grams with the references
    env = json.loads(runs["env"].iloc[0])
    assert env["metric_signature"].startswith("nrefs:2|case:mixed|eff:no|tok:13a|smooth:exp")
    with sqlite3.connect(p["store"]) as c:
        assert c.execute("SELECT COUNT(*) FROM generations").fetchone()[0] == 4 * 6
    from pypdf import PdfReader

    text = " ".join(page.extract_text() for page in PdfReader(tmp_path / "reports" / "s2s" / "report.pdf").pages)
    assert "Generations" in text and "signature nrefs:2|case:mixed" in text  # signature, outputs side by side
    assert "r (seed 0)" in text and "none (seed 0)" in text
    assert (tmp_path / "reports" / "s2s" / "paired_runs.csv").is_file()  # sacrebleu's paired bootstrap per seed


BAD = {
    "missing source field": ({"source_field": None}, "tasks[0].source_field", "source_field: mr"),
    "absent column": ({"target_field": "text"}, "tasks[0].target_field", "no column 'text'"),
    "classification metric": ({"metric": "macro_f1"}, "tasks[0].metric", "classification metric"),
    "unknown task type": ({"task_type": "seq2sq"}, "tasks[0].task_type", "Did you mean 'seq2seq'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_seq2seq_input_exits_2_naming_the_key(case, data, tmp_path):
    change, key, text = BAD[case]
    p = protocol(data, {"name": "m", "source": "builtin:minilm-l6", "decoder": "builtin:minilm-l6"})
    p["store"] = str(tmp_path / "runs" / "s.sqlite")
    p["tasks"][0].update(change)
    p["tasks"][0] = {k: v for k, v in p["tasks"][0].items() if v is not None}
    out = study_cli("validate", write_protocol(tmp_path, p), cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert key in out.stderr and text in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "runs").exists()


def test_more_bad_input_exits_2(data, tmp_path):
    def check(p, key, text):
        out = study_cli("validate", write_protocol(tmp_path, p), cwd=tmp_path)
        assert out.returncode == 2 and key in out.stderr and text in out.stderr, out.stderr
        assert "Traceback" not in out.stderr

    warm = {"name": "m", "source": "builtin:minilm-l6", "decoder": "builtin:minilm-l6"}
    write_csv(tmp_path / "empty_ref.csv", [*mr_rows(2), ("name[X]", "  ")])
    check(protocol(data, warm, train_file=str(tmp_path / "empty_ref.csv")), "tasks[0].target_field", "empty")
    check(protocol(data, {"name": "m", "source": "builtin:minilm-l6"}), "models[0].source",
          "not an encoder-decoder")
    check(protocol(data, warm, maskers=[{"name": "none", "kind": "none"}, {"name": "t", "kind": "typhoon", "rate": 0.1}]),
          "maskers[1].kind", "classification loss")
    check(protocol(data, warm, maskers=[{"name": "none", "kind": "none"},
                                        {"name": "w", "kind": "whole-word", "rate": 0.1, "side": "target"}]),
          "maskers[1].side", "encoder input (source) only")
    classify = protocol(data, {"name": "m", "source": "builtin:minilm-l6"})
    classify["tasks"] = [{"name": "tw", "dataset": "tweets-sentiment", "metric": "bleu"}]
    check(classify, "tasks[0].metric", "scores generated text")
    classify["tasks"] = [{"name": "tw", "dataset": "tweets-sentiment", "lowercase": True}]
    check(classify, "tasks[0].lowercase", "no generated text")
    best_last = protocol(data, warm, validation_fraction=0.25)
    best_last["training"].update(select="best", eval_epochs="last")
    check(best_last, "training.eval_epochs", "select: best")


@pytest.mark.skipif(not (SHARED_DATA / "e2e" / "devset.csv").is_file(), reason="needs ../shared/data/e2e")
def test_builtin_e2e_and_jfleg_group_their_references():
    from study.protocol import TaskConfig

    e2e = load_task(TaskConfig(name="e2e", dataset="e2e", task_type="seq2seq", data_dir=str(SHARED_DATA / "e2e")))
    assert len(e2e.train) == 547 and len(e2e.eval) == 630  # the dev and test MRs of the E2E release
    assert sum(len(e.references) for e in e2e.train) == 4672 and e2e.primary_metric == "bleu"
    if (SHARED_DATA / "jfleg" / "dev" / "dev.src").is_file():
        jfleg = load_task(TaskConfig(name="j", dataset="jfleg", task_type="seq2seq",
                                     data_dir=str(SHARED_DATA / "jfleg")))
        assert len(jfleg.train) == 754 and all(len(e.references) == 4 for e in jfleg.train)
        assert jfleg.primary_metric == "gleu"
