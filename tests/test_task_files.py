"""Datasets by file or hub name (study.tasks.files): every shape loads, every error exits 2 through
the real CLI naming the file and the field, paths stay out of run_ids while the data's bytes do not."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from study.protocol import load_protocol
from study.spec import expand
from study.tasks import clear_cache, load_task
from study.tasks.base import TaskDataError
from study.tasks.conll import read_conll
from study.tasks.files import FieldError, read_rows

LABELS = ["neg", "pos", "neutral"]


def _texts(n, offset=0):
    return [f"example sentence number {i + offset} about topic {i % 7}" for i in range(n)]


def _write_csv(path: Path, header, rows, delimiter=","):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter=delimiter)
        w.writerow(header)
        w.writerows(rows)
    return path


def _protocol(tmp: Path, task: dict, name="p.yaml") -> Path:
    data = {"name": "files", "seeds": [0], "store": "runs/f.sqlite",
            "tasks": [{"name": "mine", **task}],
            "models": [{"name": "m", "source": "builtin:minilm-l6", "num_hidden_layers": 1}],
            "maskers": [{"name": "none", "kind": "none"}, {"name": "r", "kind": "random-token", "rate": 0.1}],
            "training": {"epochs": 1, "batch_size": 8, "learning_rate": 1.0e-4, "max_length": 16},
            "analysis": {"baseline": "none"}}
    path = tmp / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _task(path: Path):
    clear_cache()
    return load_task(load_protocol(path).tasks[0])


def test_single_text_csv_with_string_labels(tmp_path):
    (tmp_path / "data").mkdir()
    train = [(t, LABELS[i % 3]) for i, t in enumerate(_texts(60))]
    _write_csv(tmp_path / "data" / "train.csv", ["text", "sentiment"], train)
    _write_csv(tmp_path / "data" / "eval.csv", ["text", "sentiment"], [(t, LABELS[i % 2]) for i, t in enumerate(_texts(20, 100))])
    path = _protocol(tmp_path, {"dataset": "file", "train_file": "data/train.csv", "eval_file": "data/eval.csv",
                                "text_fields": ["text"], "label_field": "sentiment", "max_train_examples": 30})
    task = _task(path)
    assert task.label_names == ("neg", "neutral", "pos")  # sorted
    assert task.num_labels == 3 and task.primary_metric == "macro_f1"
    assert len(task.train) == 30 and len(task.eval) == 20
    # stratified: 10 of each class out of 20/20/20
    assert sorted(sum(ex.label == k for ex in task.train) for k in range(3)) == [10, 10, 10]
    first = task.eval[0]
    assert (first.text_a, first.text_b, task.label_names[first.label]) == (_texts(1, 100)[0], None, "neg")
    spec = expand(load_protocol(path))[0]
    assert Path(spec.task["train_file"]).is_absolute()


def test_pair_tsv_int_labels_jsonl_json_parquet(tmp_path):
    rows = [(a, b, i % 2) for i, (a, b) in enumerate(zip(_texts(24), _texts(24, 50), strict=True))]
    _write_csv(tmp_path / "train.tsv", ["sentence1", "sentence2", "label"], rows, delimiter="\t")
    with open(tmp_path / "eval.jsonl", "w") as f:
        for a, b, y in rows[:10]:
            f.write(json.dumps({"sentence1": a, "sentence2": b, "label": y}) + "\n")
    task = _task(_protocol(tmp_path, {"dataset": "file", "train_file": "train.tsv", "eval_file": "eval.jsonl",
                                      "text_fields": ["sentence1", "sentence2"], "metric": "f1"}))
    assert task.label_names == ("0", "1") and task.primary_metric == "f1"
    assert [(e.text_a, e.text_b, e.label) for e in task.train] == rows
    pd = pytest.importorskip("pandas")
    pd.DataFrame([{"q": a, "y": y} for a, _, y in rows]).to_parquet(tmp_path / "train.parquet")
    (tmp_path / "eval.json").write_text(json.dumps([{"q": a, "y": y} for a, _, y in rows[:6]]))
    task = _task(_protocol(tmp_path, {"dataset": "file", "train_file": "train.parquet", "eval_file": "eval.json",
                                      "text_fields": ["q"], "label_field": "y"}))
    assert [(e.text_a, e.label) for e in task.eval] == [(a, y) for a, _, y in rows[:6]]


def test_hub_path_reads_a_local_folder_in_the_hub_layout(tmp_path, monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "hubdata"
    folder.mkdir()
    _write_csv(folder / "train.csv", ["text", "label"], [(t, LABELS[i % 3]) for i, t in enumerate(_texts(30))])
    _write_csv(folder / "validation.csv", ["text", "label"], [(t, LABELS[i % 3]) for i, t in enumerate(_texts(9, 70))])
    _write_csv(folder / "test.csv", ["text", "label"], [(t, "pos") for t in _texts(4, 90)])
    task = _task(_protocol(tmp_path, {"dataset": f"hf:{folder}", "text_fields": ["text"]}))
    assert len(task.train) == 30 and len(task.eval) == 9  # default eval split: validation
    assert task.label_names == ("neg", "neutral", "pos")
    task = _task(_protocol(tmp_path, {"dataset": f"hf:{folder}", "text_fields": ["text"], "eval_split": "test"}))
    assert [task.label_names[e.label] for e in task.eval] == ["pos"] * 4


def test_conll_through_the_file_loader(tmp_path):
    text = "# sent_enum = 1\nhola\tlang2\n#fail\tother\n\n# a comment\nI\tlang1\nlike\tlang1\n\n\n"
    (tmp_path / "a.conll").write_text(text)
    expected = [(["hola", "#fail"], ["lang2", "other"]), (["I", "like"], ["lang1", "lang1"])]
    assert read_conll(tmp_path / "a.conll") == expected
    assert read_rows(tmp_path / "a.conll", "conll", "train_file") == [{"tokens": t, "tags": g} for t, g in expected]
    (tmp_path / "b.txt").write_text(text)
    assert read_rows(tmp_path / "b.txt", "conll", "train_file")[1]["tokens"] == ["I", "like"]  # format: conll
    (tmp_path / "bad.conll").write_text("hola\n")  # no tag (a space-separated pair is accepted, as LinCE dev needs)
    with pytest.raises(TaskDataError, match="bad.conll:1: expected `token<TAB>tag`"):
        read_conll(tmp_path / "bad.conll")
    with pytest.raises(FieldError, match="train_file: .*bad.conll:1: expected `token<TAB>tag`"):
        read_rows(tmp_path / "bad.conll", "conll", "train_file")


def test_paths_stay_out_of_run_ids_but_the_data_does_not(tmp_path):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        _write_csv(tmp_path / d / "train.csv", ["text", "label"], [(t, i % 2) for i, t in enumerate(_texts(20))])
        _write_csv(tmp_path / d / "eval.csv", ["text", "label"], [(t, i % 2) for i, t in enumerate(_texts(6, 40))])
    task = {"dataset": "file", "train_file": "train.csv", "eval_file": "eval.csv", "text_fields": ["text"]}
    ids_a = [s.run_id for s in expand(load_protocol(_protocol(tmp_path / "a", task)))]
    ids_b = [s.run_id for s in expand(load_protocol(_protocol(tmp_path / "b", task)))]
    assert ids_a == ids_b
    _write_csv(tmp_path / "b" / "eval.csv", ["text", "label"], [(t, i % 2) for i, t in enumerate(_texts(6, 41))])
    ids_c = [s.run_id for s in expand(load_protocol(_protocol(tmp_path / "b", task)))]
    assert set(ids_c).isdisjoint(ids_a)


# --- every error through the real CLI ------------------------------------------------------------


def _cli_validate(tmp: Path, task: dict) -> str:
    path = _protocol(tmp, task)
    out = subprocess.run([sys.executable, "-m", "study.cli", "validate", str(path)], capture_output=True,
                         text=True, cwd=tmp, timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""
    assert str(path) in out.stderr and "Fix:" in out.stderr
    return out.stderr


def _good_files(tmp: Path):
    _write_csv(tmp / "train.csv", ["text", "label"], [(t, LABELS[i % 3]) for i, t in enumerate(_texts(12))])
    _write_csv(tmp / "eval.csv", ["text", "label"], [(t, LABELS[i % 3]) for i, t in enumerate(_texts(6, 30))])
    return {"dataset": "file", "train_file": "train.csv", "eval_file": "eval.csv", "text_fields": ["text"]}


ERRORS = {
    "missing file": (lambda t: {"train_file": "nope.csv"}, ["tasks[0].train_file", "nope.csv", "file not found"]),
    "unknown extension": (lambda t: {"eval_file": "eval.xlsx"}, ["tasks[0].eval_file", "eval.xlsx", "unknown extension"]),
    "missing column": (lambda t: {"text_fields": ["body"]}, ["tasks[0].text_fields", "train.csv", "no column 'body'"]),
    "missing label column": (lambda t: {"label_field": "y"}, ["tasks[0].label_field", "train.csv", "no column 'y'"]),
    "empty split": (lambda t: _write_csv(t / "eval.csv", ["text", "label"], []) and {},
                    ["tasks[0].eval_file", "eval.csv", "the split is empty"]),
    "NaN label": (lambda t: _write_csv(t / "train.csv", ["text", "label"], [("a", "pos"), ("b", "NaN")]) and {},
                  ["tasks[0].label_field", "train.csv", "1 bad row(s): line 3: a NaN or empty 'label' label"]),
    "empty label": (lambda t: _write_csv(t / "eval.csv", ["text", "label"], [("a", "pos"), ("b", "")]) and {},
                    ["tasks[0].label_field", "eval.csv", "line 3: a NaN or empty"]),
    "unseen eval label": (lambda t: _write_csv(t / "eval.csv", ["text", "label"], [("a", "pos"), ("b", "angry")]) and {},
                          ["tasks[0].label_field", "eval.csv", "angry never appear in the training data"]),
    "pair with one field": (lambda t: (_write_csv(t / "train.csv", ["premise", "hypothesis", "label"], [("a", "b", 1)]),
                                       _write_csv(t / "eval.csv", ["premise", "hypothesis", "label"], [("c", "d", 1)]))
                            and {"text_fields": ["premise"]},
                            ["tasks[0].text_fields", "train.csv", "sentence-pair task", "[premise, hypothesis]"]),
    "no text fields": (lambda t: {"text_fields": None}, ["tasks[0].text_fields", "required"]),
    "binary metric, 3 labels": (lambda t: {"metric": "mcc"}, ["tasks[0].metric", "binary metric", "3 labels"]),
    "unknown metric": (lambda t: {"metric": "weighted-f1"}, ["tasks[0].metric", "Did you mean 'weighted_f1'"]),
    "CoNLL for a sequence task": (lambda t: (t / "train.conll").write_text("a\tX\n") and {"train_file": "train.conll"},
                                  ["tasks[0].format", "train.conll", "one tag per token"]),
    "file keys on a built-in": (lambda t: {"dataset": "tweets-sentiment"}, ["tasks[0].train_file", "only applies"]),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_data_errors_exit_2_naming_file_and_field(tmp_path, case):
    task = _good_files(tmp_path)
    change, expected = ERRORS[case]
    task.update(change(tmp_path))
    task = {k: v for k, v in task.items() if v is not None}
    err = _cli_validate(tmp_path, task)
    for piece in expected:
        assert piece in err, err


def test_example_csv_maker_and_protocol_validate(tmp_path):
    root = Path(__file__).resolve().parents[1]
    shutil.copytree(root / "examples", tmp_path / "examples", ignore=shutil.ignore_patterns("data"))
    # before the CSVs exist, validation says how to make them (the protocol's local_data block)
    out = subprocess.run([sys.executable, "-m", "study.cli", "validate", "examples/span-masking.yaml"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "tasks[0].train_file" in out.stderr, out.stderr
    assert "examples/make_csv.py" in out.stderr and "Traceback" not in out.stderr
    out = subprocess.run([sys.executable, "examples/make_csv.py"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    out = subprocess.run([sys.executable, "-m", "study.cli", "validate", "examples/span-masking.yaml"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "9 runs" in out.stdout, out.stderr


def test_hub_name_validates_offline_and_edited_data_is_refused_by_the_worker(tmp_path):
    from study.protocol import TaskConfig

    proto = load_protocol(_protocol(tmp_path, {"dataset": "hf:someone/reviews:en", "text_fields": ["text"]}))
    assert proto.tasks[0].data_sha256 is None  # a hub dataset: name, config and split identify it
    spec = expand(load_protocol(_protocol(tmp_path, _good_files(tmp_path))))[0]
    clear_cache()
    assert len(load_task(TaskConfig(**spec.task)).train) == 12  # what a worker does with the spec
    _write_csv(tmp_path / "eval.csv", ["text", "label"], [("changed", "pos")])
    clear_cache()
    with pytest.raises(TaskDataError, match="changed since the runs were planned"):
        load_task(TaskConfig(**spec.task))
