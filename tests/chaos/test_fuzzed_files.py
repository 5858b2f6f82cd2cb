"""Corrupted data files end in a message, never a traceback (issue 23 §6).

Hypothesis corrupts valid CSV, TSV, JSONL, parquet and CoNLL files (truncations, flipped bytes,
inserted NULs, stray quotes, tabs and line ends, invalid UTF-8, deleted ranges) and feeds them
to the file loaders the way `study validate` and `study run` do (protocol parsing reads every
row). Each one either still parses or is a ProtocolError (a UserError: exit 2) naming the task
key; nothing else may escape. A few damaged files also go through the real CLI: exit 2, no
traceback. The default suite tries a bounded number of examples per format; the slow one more.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from study.errors import ProtocolError
from study.protocol import parse_protocol
from study.tasks.files import clear_cache

LABELS = ["neg", "pos", "neutral"]
ROWS = [(f'tweet {i}: "quoted", with comma\\and backslash #{i % 7}', LABELS[i % 3]) for i in range(12)]


def good_bytes(fmt: str) -> bytes:
    frame = pd.DataFrame(ROWS, columns=["text", "label"])
    if fmt == "csv":
        return frame.to_csv(index=False).encode()
    if fmt == "tsv":
        return "text\tlabel\n".join(["", *(f"{t}\t{y}\n" for t, y in ROWS)]).encode()
    if fmt == "jsonl":
        return frame.to_json(orient="records", lines=True).encode()
    if fmt == "parquet":
        buf = io.BytesIO()
        frame.to_parquet(buf, index=False)
        return buf.getvalue()
    # CoNLL: token-level, three-word sentences tagged with the labels
    return "".join(f"w{i}a\t{y}\nw{i}b\t{y}\nw{i}c\tneg\n\n" for i, (_, y) in enumerate(ROWS)).encode()


def task(folder: Path, fmt: str) -> dict:
    t = {"name": "mine", "dataset": "file", "train_file": str(folder / f"train.{fmt}"),
         "eval_file": str(folder / f"eval.{fmt}")}
    if fmt == "conll":
        t["task_type"] = "token-classification"
    else:
        t["text_fields"] = ["text"]
    return t


def protocol(folder: Path, fmt: str) -> dict:
    return {"name": "fuzz", "seeds": [0], "store": str(folder / "runs" / "f.sqlite"), "tasks": [task(folder, fmt)],
            "models": [{"name": "m", "source": "builtin:minilm-l6", "num_hidden_layers": 1}],
            "maskers": [{"name": "none", "kind": "none"}, {"name": "r", "kind": "random-token", "rate": 0.1}],
            "training": {"epochs": 1, "batch_size": 8, "learning_rate": 1.0e-4, "max_length": 16},
            "analysis": {"baseline": "none"}}


NASTY = [b"\x00", b"\xff", b"\xc3", b"\xe2\x82", b'"', b"'", b"\t", b"\n", b"\r", b"\r\n", b",", b"{", b"}", b"[",
         b"]", b"#", b"\\", b"NaN", b"null", b"PAR1", b" " * 3, b"\x1e"]

operation = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("flip"), st.floats(0, 1), st.integers(1, 255)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.one_of(st.sampled_from(NASTY), st.binary(min_size=1, max_size=6))),
    st.tuples(st.just("delete"), st.floats(0, 1), st.integers(1, 64)),
)


def corrupt(data: bytes, ops) -> bytes:
    b = bytearray(data)
    for op in ops:
        at = min(int(op[1] * len(b)), max(len(b) - 1, 0))
        if op[0] == "truncate":
            del b[at:]
        elif op[0] == "flip" and b:
            b[at] ^= op[2]
        elif op[0] == "insert":
            b[at:at] = op[2]
        elif op[0] == "delete":
            del b[at:at + op[2]]
    return bytes(b)


def check_one(folder: Path, fmt: str, which: str, ops) -> None:
    for split in ("train", "eval"):
        data = good_bytes(fmt)
        (folder / f"{split}.{fmt}").write_bytes(corrupt(data, ops) if split == which else data)
    clear_cache()
    try:
        parse_protocol(protocol(folder, fmt), file="fuzz.yaml")
    except ProtocolError as e:  # the exit-2 path; it names the key (and the file, for data problems)
        assert str(e).startswith("fuzz.yaml: tasks[0].") and "Fix:" in str(e), str(e)


FORMATS = ["csv", "tsv", "jsonl", "parquet", "conll"]


def fuzz(fmt: str, tmp_path_factory, examples: int):
    folder = tmp_path_factory.mktemp(f"fuzz-{fmt}")

    @settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(which=st.sampled_from(["train", "eval"]), ops=st.lists(operation, min_size=1, max_size=4))
    def run(which, ops):
        check_one(folder, fmt, which, ops)

    run()


@pytest.mark.parametrize("fmt", FORMATS)
def test_corrupted_files_are_user_errors(fmt, tmp_path_factory):
    fuzz(fmt, tmp_path_factory, examples=40)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_corrupted_files_are_user_errors_many(fmt, tmp_path_factory):
    fuzz(fmt, tmp_path_factory, examples=300)


DAMAGED = {  # corruptions that escaped as tracebacks before the loaders caught them
    "csv": (lambda b: b.replace(b"tweet 3", b"tweet \xff3"), "byte"),
    "jsonl": (lambda b: b + b"17\n", "not an object of named fields"),
    "parquet": (lambda b: b[: len(b) // 2], "not a readable parquet file"),
    "conll": (lambda b: b"\xc3(" + b, "is not UTF-8"),
}


@pytest.mark.parametrize("fmt", list(DAMAGED))
def test_damaged_files_exit_2_through_the_cli(fmt, tmp_path):
    damage, expected = DAMAGED[fmt]
    (tmp_path / f"train.{fmt}").write_bytes(damage(good_bytes(fmt)))
    (tmp_path / f"eval.{fmt}").write_bytes(good_bytes(fmt))
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(protocol(tmp_path, fmt), sort_keys=False))
    out = subprocess.run([sys.executable, "-m", "study.cli", "validate", "p.yaml"], capture_output=True, text=True,
                         cwd=tmp_path, timeout=300)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("error: p.yaml: tasks[0].train_file: ") and f"train.{fmt}" in line
    assert expected in line and "Fix:" in line
