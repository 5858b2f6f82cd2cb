"""The first hour of a new user (issue 22 §3): each friction item found by trying the tool on
outside data with an own plugin, with the behaviour that removes it."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from protocoltools import tiny_protocol_dict, write_protocol

from study.cli import main
from study.protocol import load_protocol, parse_protocol
from study.spec import expand
from study.store import Store


def run_cli(*args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def _registered_store(path: Path) -> None:
    with Store(path) as store:
        store.register(expand(parse_protocol(tiny_protocol_dict(store=str(path)))))


# -- store: resolves relative to the protocol ------------------------------------------------

def test_store_resolves_relative_to_the_protocol_not_the_working_directory(tmp_path, monkeypatch):
    study = tmp_path / "study"
    study.mkdir()
    proto = write_protocol(study, tiny_protocol_dict(store="runs/tiny.sqlite"))
    _registered_store(study / "runs" / "tiny.sqlite")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert load_protocol(proto).store_path == study / "runs" / "tiny.sqlite"
    code, out, err = run_cli("status", proto)
    assert code == 0, err
    assert "no store yet" not in out and "6 pending" in out
    assert not (elsewhere / "runs").exists()


def test_a_store_at_the_old_working_directory_place_says_how_to_move_it(tmp_path, monkeypatch):
    study = tmp_path / "study"
    study.mkdir()
    proto = write_protocol(study, tiny_protocol_dict(store="runs/tiny.sqlite"))
    monkeypatch.chdir(tmp_path)
    _registered_store(tmp_path / "runs" / "tiny.sqlite")  # where versions before issue 22 put it
    for command in ("status", "plan", "run", "analyze"):
        code, out, err = run_cli(command, proto, *(["--calibrate", "never"] if command == "plan" else []))
        assert code == 2, (command, out, err)
        assert "Traceback" not in err
        assert f"mv {tmp_path / 'runs' / 'tiny.sqlite'}*" in err
        assert str(study / "runs") in err and "absolute path" in err
    assert not (study / "runs").exists()  # nothing written at the new place


# -- a smoothed ETA ------------------------------------------------------------------------

class _Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


class _Spec:
    def __init__(self, i):
        self.label = f"run{i}"


class _Result:
    primary_metric, final_metrics, wall_time_s = "acc", {"acc": 0.5}, 30.0


def _simulated_etas(monkeypatch, durations, slots):
    """(time, ETA) every second of a grid run on ``slots`` slots with these run times (a fake clock)."""
    import study.progress as progress

    clock = _Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock)
    p = progress.Progress(total=len(durations), stream=io.StringIO(), tty=False, slots=slots)
    queue = list(enumerate(durations))
    running: dict[int, float] = {}
    out = []
    start = clock.t
    while queue or running:
        while queue and len(running) < slots:
            i, d = queue.pop(0)
            running[i] = clock.t + d
            p.started(_Spec(i))
        for i, end in list(running.items()):
            if end <= clock.t:
                del running[i]
                p.finished(_Spec(i), _Result())
        out.append((clock.t - start, p.eta_s()))
        clock.t += 1
    return out, clock.t - 1 - start


def test_the_eta_is_smooth_and_honest_between_waves_of_finishes(monkeypatch):
    # the demo: 12 runs of ~33 s (a few seconds apart) on 2 slots
    durations = [33, 35, 31, 34, 36, 30, 33, 32, 35, 34, 31, 33]
    etas, total = _simulated_etas(monkeypatch, durations, slots=2)
    after_first = [(t, e) for t, e in etas if e is not None and t >= 31]
    assert after_first and all(e is None for t, e in etas if t < 30)  # nothing to go on before a run ends
    for t, eta in after_first[:-1]:
        assert abs((t + eta) - total) <= 0.12 * total, (t, eta, total)  # projected end within 12 %
    steps = [abs(b[1] - a[1]) for a, b in zip(after_first[:-1], after_first[1:], strict=True)]
    assert max(steps) <= 20  # one second later the ETA moves by seconds, not minutes


# -- `study` not found after `make demo` ---------------------------------------------------

REPO = Path(__file__).resolve().parents[1]


def test_make_demo_ends_with_the_command_to_use_next_and_the_quick_start_says_to_activate():
    import shutil
    import subprocess

    import pytest

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    # Under `make test` this make is a sub-make, which would print "Entering/Leaving directory"
    # lines around the recipe: --no-print-directory keeps only the recipe.
    dry = subprocess.run(["make", "--no-print-directory", "-n", "demo"], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    lines = [ln for ln in dry.splitlines() if ln.strip()]
    assert "study report protocols/demo.yaml" in lines[-3]
    assert lines[-1].startswith("echo") and "source .venv/bin/activate && study status protocols/demo.yaml" in lines[-1]
    readme = (REPO / "README.md").read_text()
    quick = readme[readme.index("## Quick start"):readme.index("### The demo's verdict")]
    assert "source .venv/bin/activate" in quick


# -- plugins: documented inputs, smoke-tested by validate, deterministic errors not retried ----

# A plugin written from the README's table of what each hook receives, asserting every claim
# it relies on, and using the documented helpers.
DOCUMENTED_PLUGIN = '''
from dataclasses import dataclass

from study.maskers import Masker, register


@dataclass(frozen=True)
class DocParams:
    rate: float = 0.2


@register("doc-check")
class DocCheck(Masker):
    Params = DocParams
    level = "input"

    def setup(self, model, tokenizer, train_batches, total_steps):
        assert isinstance(train_batches, list) and all(isinstance(x, dict) for x in train_batches)
        first = train_batches[0]
        for key in ("input_ids", "attention_mask", "_word_ids", "_sequence_ids"):
            assert isinstance(first[key], list) and all(isinstance(t, int) for t in first[key]), key
        assert isinstance(first["label"], int) and isinstance(total_steps, int)
        self.seen_setup = len(train_batches)

    def apply(self, batch, step):
        import torch

        from study.maskers.base import eligible_positions
        from study.maskers.input_level import replace_tokens

        ids = batch["input_ids"]
        assert ids.dim() == 2 and ids.dtype == torch.long and batch["labels"].shape == ids.shape[:1]
        assert batch["_word_ids"].shape == ids.shape and isinstance(step, int)
        eligible = eligible_positions(ids, batch["attention_mask"], self.context.special_ids)
        draw = torch.rand(ids.shape, generator=self.generator, device=self.generator.device)
        chosen = (draw < self.params.rate).to(ids.device) & eligible
        self.record_tensors(chosen, eligible)
        return replace_tokens(batch, chosen, self.context.replacement_id)
'''

# What the README used to suggest: ``setup`` receives batches (of tensors).
SETUP_AS_ONCE_DOCUMENTED = DOCUMENTED_PLUGIN.replace(
    "assert isinstance(train_batches, list) and", "width = train_batches[0]['input_ids'].shape[1]\n        assert")
APPLY_FAILS_AT_STEP_1 = DOCUMENTED_PLUGIN.replace(
    'ids = batch["input_ids"]\n', 'ids = batch["input_ids"]\n        if step == 1:\n'
    "            raise ValueError('span longer than the sequence')\n")


def _plugin_protocol(tmp: Path, source: str, **overrides) -> Path:
    (tmp / "my_masker.py").write_text(source)
    data = tiny_protocol_dict(plugins=["my_masker.py"], seeds=[0],
                              maskers=[{"name": "none", "kind": "none"}, {"name": "mine", "kind": "doc-check"}],
                              **overrides)
    return write_protocol(tmp, data)


def test_validate_smoke_tests_a_plugin_written_from_the_documentation(tmp_path):
    from protocoltools import study_cli

    out = study_cli("validate", _plugin_protocol(tmp_path, DOCUMENTED_PLUGIN), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "maskers ok — 2 masker(s) trained 2 steps" in out.stderr


def test_validate_names_the_plugin_the_hook_and_the_error_before_any_training(tmp_path):
    from protocoltools import study_cli

    for source, says in ((SETUP_AS_ONCE_DOCUMENTED, "setup raised AttributeError: 'list' object has no attribute 'shape'"),
                         (APPLY_FAILS_AT_STEP_1, "apply raised ValueError: span longer than the sequence")):
        out = study_cli("validate", _plugin_protocol(tmp_path, source), cwd=tmp_path)
        assert out.returncode == 2, out.stderr
        assert "plugins[0] (my_masker.py): masker 'mine' (kind 'doc-check'): " in out.stderr and says in out.stderr
        assert "my_masker.py:" in out.stderr and "Traceback" not in out.stderr
        assert not (tmp_path / "runs").exists()
    assert "at step 1" in out.stderr
    skipped = study_cli("validate", "--no-smoke", _plugin_protocol(tmp_path, APPLY_FAILS_AT_STEP_1), cwd=tmp_path)
    assert skipped.returncode == 0, skipped.stderr


def test_a_plugin_error_is_not_retried(tmp_path):
    import sqlite3

    from protocoltools import study_cli

    proto = _plugin_protocol(tmp_path, APPLY_FAILS_AT_STEP_1, execution={"max_attempts": 3, "threads_per_run": 1})
    out = study_cli("run", proto, cwd=tmp_path)
    assert out.returncode == 1, out.stderr
    con = sqlite3.connect(tmp_path / "runs" / "tiny.sqlite")
    rows = dict(con.execute("SELECT masker, status || ' ' || attempts FROM runs"))
    assert rows == {"none": "done 1", "mine": "failed 1"}
    (message,) = con.execute("SELECT message FROM events WHERE kind = 'failure'").fetchone()
    assert "apply raised ValueError: span longer than the sequence (my_masker.py:" in message
    assert "at step 1" in message and "not retried" in message
    # the run records what max_length cut, counted here independently from untruncated tokenizations
    import json

    from transformers import AutoTokenizer

    from study.models import resolve_source
    from study.protocol import TaskConfig
    from study.tasks import load_task

    (env,) = con.execute("SELECT env FROM runs WHERE masker = 'none'").fetchone()
    tok = AutoTokenizer.from_pretrained(resolve_source("builtin:minilm-l6"))
    task = load_task(TaskConfig(**tiny_protocol_dict()["tasks"][0]))
    n = tiny_protocol_dict()["training"]["max_length"]
    assert json.loads(env)["truncation"] == {
        split: {"examples": sum(len(tok(e.text_a)["input_ids"]) > n for e in examples), "of": len(examples)}
        for split, examples in (("train", task.train), ("eval", task.eval))}


# -- file checks list every bad row ------------------------------------------------------------

def test_file_checks_list_the_first_ten_bad_rows_with_their_line_numbers_and_the_count(tmp_path):
    import csv

    # A quoted text spanning two lines shifts every later row's line number: line numbers, not row
    # indices, are what an editor shows.
    rows = [("a fine day", "pos"), ("two\nlines", "neg")] + [(f"t{i}", "" if i % 2 else "pos") for i in range(30)]
    with open(tmp_path / "train.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(rows)
    (tmp_path / "eval.csv").write_text("text,label\nok,pos\nfine,neg\n")
    data = tiny_protocol_dict(tasks=[{"name": "mine", "dataset": "file", "train_file": "train.csv",
                                      "eval_file": "eval.csv", "text_fields": ["text"]}])
    code, _, err = run_cli("validate", "--no-smoke", write_protocol(tmp_path, data))
    assert code == 2
    # independently: the 1-based line of every row with an empty label (header line 1, row 2 spans 2 lines)
    line, expected = 2, []
    for text, label in rows:
        if not label:
            expected.append(line)
        line += text.count("\n") + 1
    assert len(expected) == 15
    shown = "; ".join(f"line {n}: a NaN or empty 'label' label" for n in expected[:10])
    assert f"train.csv: 15 bad row(s) (the first 10 shown): {shown}. Fix:" in err


# -- truncation counted -------------------------------------------------------------------------

def test_truncation_counts_what_max_length_cuts_against_an_untruncated_tokenization(tmp_path):
    from transformers import AutoTokenizer

    from study.models import resolve_source
    from study.protocol import TaskConfig
    from study.tasks import load_task
    from study.tasks.base import Example
    from study.tasktypes.classification import encode
    from study.truncation import truncation

    tok = AutoTokenizer.from_pretrained(resolve_source("builtin:minilm-l6"))
    task = load_task(TaskConfig(name="t", dataset="tweets-sentiment", max_train_examples=300))
    for n in (16, 32, 48):
        items = encode(tok, task.train, n)
        expected = sum(len(tok(e.text_a)["input_ids"]) > n for e in task.train)
        assert truncation(tok, task.train, items, n) == {"examples": expected, "of": 300}
        assert 0 < expected < 300 if n < 48 else expected >= 0
    # token task: a word is cut when its first subword would sit at or after position max_length - 1
    words = [tuple(f"w{i}x{'y' * (i % 7)}" for i in range(k)) for k in (3, 9, 20, 40)]
    examples = [Example(f"s{j}", " ".join(w), None, 0, w, tuple(0 for _ in w)) for j, w in enumerate(words)]
    n = 24
    items = encode(tok, examples, n)
    cut = []
    for w in words:
        ids = tok(list(w), is_split_into_words=True)
        firsts = [i for i, wid in enumerate(ids.word_ids()) if wid is not None and (i == 0 or ids.word_ids()[i - 1] != wid)]
        cut.append(sum(pos >= n - 1 for pos in firsts))
    assert truncation(tok, examples, items, n) == {"examples": sum(c > 0 for c in cut), "of": 4, "words": sum(cut),
                                                   "words_of": sum(len(w) for w in words)}
    assert sum(cut) > 0


def test_validate_prints_truncation_and_which_class_binary_f1_scores(tmp_path):
    from protocoltools import study_cli

    (tmp_path / "train.csv").write_text("text,label\n" + "".join(
        f"{'a long sentence about nothing much ' * (i % 3 + 1)},{'yes' if i % 2 else 'no'}\n" for i in range(24)))
    (tmp_path / "eval.csv").write_text("text,label\nshort one,no\nanother,yes\n")
    data = tiny_protocol_dict(seeds=[0], tasks=[{"name": "mine", "dataset": "file", "train_file": "train.csv",
                                                 "eval_file": "eval.csv", "text_fields": ["text"], "metric": "f1"}])
    data["training"]["max_length"] = 16
    out = study_cli("validate", write_protocol(tmp_path, data), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "task mine: primary metric f1 (class 1: 'yes'); labels ['no', 'yes']" in out.stderr
    # 6 and 12 one-token words + [CLS] and [SEP] fit in 16; the 8 rows of 18 words do not
    assert "max_length 16 cuts, mine/minilm-l1: train 8 of 24 examples (33.3 %); eval 0 of 2 examples (0.0 %)" \
        in out.stderr
