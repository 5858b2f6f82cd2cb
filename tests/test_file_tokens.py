"""Token classification from your own files (``dataset: file`` + ``task_type: token-classification``):
CoNLL (and jsonl/parquet list fields) become the Examples lince-lid builds, ``validation_file``
is a validation split of its own, and a small LinCE cut runs end to end through the real CLI."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from protocoltools import SHARED_DATA, study_cli, tiny_protocol_dict, write_protocol

from study.protocol import load_protocol
from study.spec import expand
from study.tasks import clear_cache, load_task
from study.tasks.conll import read_conll

LINCE = SHARED_DATA / "lince-lid-spaeng"
# Sentences with a deliberate tie (row 2: one X, one Y -> lowest id wins) and a '#hashtag' token.
TRAIN = [(["I", "like", "tacos"], ["en", "en", "en"]), (["me", "gusta"], ["es", "es"]),
         (["#yolo", "amigo"], ["other", "es"]), (["so", "bueno", "dude", "!"], ["en", "es", "en", "other"])]
EVAL = [(["hola", "friend"], ["es", "en"]), ([":)"], ["other"])]
VALID = [(["muy", "good"], ["es", "en"])]


def write_conll(path: Path, sentences) -> Path:
    lines = []
    for i, (words, tags) in enumerate(sentences):
        lines += [f"# sent_enum = {i + 1}", *(f"{w}\t{t}" for w, t in zip(words, tags, strict=True)), ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def token_task(tmp: Path, **extra) -> dict:
    write_conll(tmp / "train.conll", TRAIN)
    write_conll(tmp / "eval.conll", EVAL)
    write_conll(tmp / "valid.conll", VALID)
    return {"name": "tok", "dataset": "file", "task_type": "token-classification", "train_file": "train.conll",
            "eval_file": "eval.conll", "validation_file": "valid.conll", **extra}


def protocol(tmp: Path, task: dict, **training) -> Path:
    data = tiny_protocol_dict(seeds=[0], tasks=[task], store=str(tmp / "runs" / "tok.sqlite"))
    data["training"] = {**data["training"], **training}
    return write_protocol(tmp, data)


def loaded(path: Path):
    clear_cache()
    return load_task(load_protocol(path).tasks[0])


def test_conll_becomes_token_examples_with_sorted_tag_ids(tmp_path):
    task = loaded(protocol(tmp_path, token_task(tmp_path)))
    assert task.task_type == "token-classification" and task.label_names == ("en", "es", "other")
    assert task.primary_metric == "weighted_f1" and task.extra_metrics == ("macro_f1",)
    ids = {"en": 0, "es": 1, "other": 2}
    for examples, sentences, prefix in ((task.train, TRAIN, "train"), (task.eval, EVAL, "eval"),
                                        (task.validation, VALID, "validation")):
        assert [e.id for e in examples] == [f"{prefix}-{i}" for i in range(len(sentences))]
        assert [e.words for e in examples] == [tuple(w) for w, _ in sentences]
        assert [e.tags for e in examples] == [tuple(ids[t] for t in g) for _, g in sentences]
        assert [e.text_a for e in examples] == [" ".join(w) for w, _ in sentences]
        # the stratum: the most frequent tag, the lowest id on a tie
        assert [e.label for e in examples] == [min(ids[t] for t, n in Counter(g).items() if n == max(Counter(g).values()))
                                               for _, g in sentences]
    assert task.train[2].words[0] == "#yolo"  # a '#' line with a tab is a token, not a comment


def test_jsonl_and_parquet_list_fields_give_the_same_task_as_conll(tmp_path):
    conll = loaded(protocol(tmp_path, token_task(tmp_path, metric="macro_f1")))
    assert conll.primary_metric == "macro_f1" and conll.extra_metrics == ("weighted_f1",)
    for split, sentences in (("train", TRAIN), ("eval", EVAL), ("valid", VALID)):
        with open(tmp_path / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for words, tags in sentences:
                f.write(json.dumps({"words": words, "ner": tags}) + "\n")
        pd.DataFrame([{"words": w, "ner": t} for w, t in sentences]).to_parquet(tmp_path / f"{split}.parquet")
    for ext in ("jsonl", "parquet"):
        task = loaded(protocol(tmp_path, token_task(
            tmp_path, metric="macro_f1", train_file=f"train.{ext}", eval_file=f"eval.{ext}",
            validation_file=f"valid.{ext}", text_fields=["words"], label_field="ner")))
        assert task.fingerprint == conll.fingerprint and task.label_names == conll.label_names, ext
        assert task.validation == conll.validation


def test_validation_file_is_hashed_by_bytes_never_by_path(tmp_path):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        token_task(tmp_path / d)
    (tmp_path / "b" / "data").mkdir()
    (tmp_path / "b" / "valid.conll").rename(tmp_path / "b" / "data" / "v.conll")
    a = load_protocol(protocol(tmp_path / "a", token_task(tmp_path / "a")))
    b = load_protocol(protocol(tmp_path / "b", {**token_task(tmp_path / "b"), "validation_file": "data/v.conll"}))
    (tmp_path / "b" / "valid.conll").unlink()  # token_task wrote it again; b reads data/v.conll
    assert a.tasks[0].validation_file != b.tasks[0].validation_file
    assert [s.run_id for s in expand(a)] == [s.run_id for s in expand(b)]
    # data_sha256: sha256 over the per-file digests, train, eval, validation in that order
    digests = b"".join(hashlib.sha256((tmp_path / "a" / f).read_bytes()).digest()
                       for f in ("train.conll", "eval.conll", "valid.conll"))
    assert a.tasks[0].data_sha256 == hashlib.sha256(digests).hexdigest()
    # the same data without a validation file hashes only train and eval (what it always did)
    no_val = load_protocol(protocol(tmp_path / "a", {**token_task(tmp_path / "a"), "validation_file": None,
                                                     "validation_fraction": 0.25}))
    digests = b"".join(hashlib.sha256((tmp_path / "a" / f).read_bytes()).digest()
                       for f in ("train.conll", "eval.conll"))
    assert no_val.tasks[0].data_sha256 == hashlib.sha256(digests).hexdigest()
    # editing only the validation file's bytes re-runs everything of that task
    write_conll(tmp_path / "b" / "data" / "v.conll", [(["muy", "good"], ["es", "es"])])
    edited = load_protocol(protocol(tmp_path / "b", {**token_task(tmp_path / "b"), "validation_file": "data/v.conll"}))
    assert set(s.run_id for s in expand(edited)).isdisjoint(s.run_id for s in expand(a))


# --- errors: exit 2 through the real CLI, naming the file and the key ----------------------------


def _write(name, text):
    return lambda t: (t / name).write_text(text, encoding="utf-8")


ERRORS = {
    "unseen eval tag": (_write("eval.conll", "hola\tes\nfriend\tfr\n"), {},
                        ["tasks[0].eval_file", "eval.conll", "tag(s) fr never appear in the training data"]),
    "unseen validation tag": (_write("valid.conll", "x\tzz\n"), {},
                              ["tasks[0].validation_file", "valid.conll", "tag(s) zz never appear"]),
    "empty sentence file": (_write("train.conll", "# only a comment\n\n"), {},
                            ["tasks[0].train_file", "train.conll", "the split is empty"]),
    "malformed line": (_write("eval.conll", "hola\n"), {}, ["tasks[0].eval_file", "eval.conll:1", "token<TAB>tag"]),
    "sequence task given CoNLL": (None, {"task_type": "sequence-classification", "validation_file": None},
                                  ["tasks[0].format", "train.conll", "one tag per token", "token-classification"]),
    "token task given CSV": (_write("eval.csv", "text,label\na,b\n"), {"eval_file": "eval.csv"},
                             ["tasks[0].format", "eval.csv", "csv holds one label per text", ".conll"]),
    "both validation keys": (None, {"validation_fraction": 0.2},
                             ["tasks[0].validation_file", "validation_fraction is set too"]),
    "missing validation file": (None, {"validation_file": "nope.conll"},
                                ["tasks[0].validation_file", "nope.conll", "file not found"]),
    "validation_file on a built-in": (None, {"dataset": "tweets-sentiment", "train_file": None, "eval_file": None},
                                      ["tasks[0].validation_file", "only applies"]),
    "columns named for CoNLL": (None, {"text_fields": ["text"]}, ["tasks[0].text_fields", "CoNLL files have no columns"]),
    "words not a list": (_write("eval.jsonl", '{"tokens": "hola friend", "tags": ["es", "en"]}\n'),
                         {"eval_file": "eval.jsonl", "text_fields": ["tokens"], "label_field": "tags"},
                         ["tasks[0].text_fields", "eval.jsonl", "line 1: 'tokens' is not a list of words"]),
    "one tag short": (_write("eval.jsonl", '{"tokens": ["hola", "friend"], "tags": ["es"]}\n'),
                      {"eval_file": "eval.jsonl", "text_fields": ["tokens"], "label_field": "tags"},
                      ["tasks[0].label_field", "eval.jsonl", "line 1: 2 words but 1 tags"]),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_token_file_errors_exit_2_naming_file_and_key(tmp_path, case):
    change, task_change, expected = ERRORS[case]
    task = token_task(tmp_path)
    if change:
        change(tmp_path)
    task = {k: v for k, v in {**task, **task_change}.items() if v is not None}
    path = protocol(tmp_path, task)
    out = study_cli("validate", path, cwd=tmp_path, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr and out.stdout == "", out.stdout + out.stderr
    assert str(path) in out.stderr and "Fix:" in out.stderr, out.stderr
    for piece in expected:
        assert piece in out.stderr, out.stderr
    assert not (tmp_path / "runs").exists()


def test_select_best_accepts_validation_file_and_names_it_when_missing(tmp_path):
    task = token_task(tmp_path)
    assert study_cli("validate", protocol(tmp_path, task, select="best"), cwd=tmp_path, timeout=120).returncode == 0
    without = {k: v for k, v in task.items() if k != "validation_file"}
    out = study_cli("validate", protocol(tmp_path, without, select="best"), cwd=tmp_path, timeout=120)
    assert out.returncode == 2 and "tasks[0].validation_fraction" in out.stderr and "validation_file" in out.stderr


# --- end to end: a LinCE cut through dataset: file + format: conll ---------------------------------


def _lince_cut(tmp: Path) -> None:
    """A few dozen real LinCE sentences (tags lang1/lang2/other only, so eval has no unseen tag)."""
    keep = {"lang1", "lang2", "other"}
    train = [s for s in read_conll(LINCE / "train.conll")[:400] if set(s[1]) <= keep and len(s[0]) <= 30]
    dev = [s for s in read_conll(LINCE / "dev.conll")[:200] if set(s[1]) <= keep and len(s[0]) <= 30]
    write_conll(tmp / "train.txt", train[:40])
    write_conll(tmp / "valid.txt", train[40:52])
    write_conll(tmp / "eval.txt", dev[:16])


@pytest.mark.skipif(not LINCE.is_dir(), reason="needs ../shared/data/lince-lid-spaeng")
def test_conll_token_study_with_validation_file_through_the_cli(tmp_path):
    _lince_cut(tmp_path)
    task = {"name": "lid-file", "dataset": "file", "format": "conll", "task_type": "token-classification",
            "train_file": "train.txt", "eval_file": "eval.txt", "validation_file": "valid.txt"}
    path = protocol(tmp_path, task, epochs=2, max_length=64, select="best")
    out = study_cli("run", path, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    p = load_protocol(path)
    specs = expand(p)
    from study.store import Store

    with Store(p.store_path) as store:
        runs = store.load_runs(specs)
        preds = store.load_predictions(specs)
        metrics = store.load_epoch_metrics()
    assert len(runs) == 2 and set(runs.status) == {"done"} and runs.metric.eq("weighted_f1").all()
    n_words = sum(len(w) for w, _ in read_conll(tmp_path / "eval.txt"))
    from sklearn.metrics import f1_score

    for run_id, grp in preds.groupby("run_id"):
        assert len(grp) == n_words and grp.example_id.str.match(r"^eval-\d+:\d+$").all()
        value = runs.set_index("run_id").value[run_id]
        assert f1_score(grp.label, grp.prediction, average="weighted") == pytest.approx(value, abs=1e-12)
        mine = metrics[metrics.run_id == run_id]
        final = mine[mine.is_final == 1].set_index("name").value
        assert final["weighted_f1"] == value and "macro_f1" in final
        # every epoch was scored on the 12 validation sentences; the selected one is best there
        val = mine[mine.name == "validation:weighted_f1"].set_index("epoch").value
        assert len(val) == 2 and val[mine[mine.is_final == 1].epoch.iloc[0]] == val.max()
    env = json.loads(sqlite3.connect(p.store_path).execute("SELECT env FROM runs LIMIT 1").fetchone()[0])
    assert env["labels"] == ["lang1", "lang2", "other"]
