"""Bad input never shows a traceback: every command exits 2 naming the file, the problem and the
fix, and writes nothing.

The situations are real files: a protocol path that is a folder, a FIFO or a dangling link, a
store under a regular file or in /proc, a text file or another program's SQLite database as the
store, a real store of another study or of a newer schema version, an ``--out`` under a file.
The full command × situation matrix goes through ``study.cli.main`` in this process (fast); a
sample of it, and generated broken protocols, go through the real CLI in a subprocess.
"""

from __future__ import annotations

import contextlib
import io
import os
import sqlite3
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from protocoltools import study_cli, tiny_protocol_dict, write_protocol

from study.cli import main
from study.protocol import parse_protocol
from study.spec import expand
from study.store import Store
from study.storecheck import SCHEMA_VERSION

COMMANDS = ["validate", "plan", "status", "run", "analyze", "report", "export", "publish"]


def _store_protocol(tmp: Path, store: str | Path, **overrides) -> Path:
    return write_protocol(tmp, tiny_protocol_dict(store=str(store), **overrides))


def _real_store(path: Path, study: str, schema_version: int | None = None) -> None:
    """A results store written by the real Store, with the grid of study ``study`` registered."""
    with Store(path) as store:
        store.register(expand(parse_protocol(tiny_protocol_dict(name=study, store=str(path)))))
        if schema_version is not None:
            store.conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(schema_version),))


# Each situation builds its files in a fresh folder and returns (protocol path, extra CLI args,
# what the message must say). Paths are absolute: the commands run in that folder.
def protocol_is_folder(tmp):
    return tmp, [], "is a folder"


def protocol_is_dangling_link(tmp):
    (tmp / "p.yaml").symlink_to(tmp / "deleted.yaml")
    return tmp / "p.yaml", [], "does not exist"


def protocol_is_fifo(tmp):
    os.mkfifo(tmp / "p.yaml")  # reading it would block forever
    return tmp / "p.yaml", [], "not a regular file"


def protocol_is_not_utf8(tmp):
    (tmp / "p.yaml").write_bytes(b"name: \xff\xfe tiny\n")
    return tmp / "p.yaml", [], "not valid YAML"


def protocol_is_a_list(tmp):
    (tmp / "p.yaml").write_text(yaml.safe_dump([tiny_protocol_dict()]))
    return tmp / "p.yaml", [], "mapping at the top level"


def protocol_is_bad_yaml(tmp):
    (tmp / "p.yaml").write_text("name: tiny\nseeds: [0, 1\n")
    return tmp / "p.yaml", [], "not valid YAML"


def store_under_a_file(tmp):
    (tmp / "notes.txt").write_text("not a folder")
    return _store_protocol(tmp, tmp / "notes.txt" / "x.sqlite"), [], "is a file, not a folder"


def store_in_proc(tmp):
    return _store_protocol(tmp, "/proc/maskstudy-test/x.sqlite"), [], "cannot create the folder /proc/maskstudy-test"


def store_is_a_folder(tmp):
    (tmp / "store.sqlite").mkdir()
    return _store_protocol(tmp, tmp / "store.sqlite"), [], "is a folder"


def store_is_text(tmp):
    (tmp / "store.sqlite").write_bytes(os.urandom(64) + b"random bytes, not SQLite")
    return _store_protocol(tmp, tmp / "store.sqlite"), [], "not an SQLite database"


def store_is_another_programs_database(tmp):
    with contextlib.closing(sqlite3.connect(tmp / "store.sqlite")) as con:
        con.execute("CREATE TABLE customers (id INTEGER, name TEXT)")
        con.commit()
    return _store_protocol(tmp, tmp / "store.sqlite"), [], "SQLite database of something else"


def store_is_damaged(tmp):
    _real_store(tmp / "store.sqlite", study="tiny")
    (tmp / "store.sqlite").write_bytes((tmp / "store.sqlite").read_bytes()[:300])  # header intact, pages cut
    return _store_protocol(tmp, tmp / "store.sqlite"), [], "cannot be read as a results store"


def store_of_another_study(tmp):
    _real_store(tmp / "store.sqlite", study="someone-else")
    return _store_protocol(tmp, tmp / "store.sqlite"), [], "holds the results of study 'someone-else'"


def store_of_a_newer_schema(tmp):
    _real_store(tmp / "store.sqlite", study="tiny", schema_version=SCHEMA_VERSION + 1)
    return _store_protocol(tmp, tmp / "store.sqlite"), [], "newer maskstudy"


def out_under_a_file(tmp):
    (tmp / "notes.txt").write_text("not a folder")
    return _store_protocol(tmp, tmp / "store.sqlite"), ["--out", tmp / "notes.txt" / "out"], "is a file, not a folder"


def default_out_under_a_file(tmp):
    (tmp / "reports").write_text("a file where the default reports/<name>/ folder would go")
    (tmp / "results").write_text("a file where publish's default results/<name>/ folder would go")
    return _store_protocol(tmp, tmp / "store.sqlite"), [], "is a file, not a folder"


SITUATIONS = [protocol_is_folder, protocol_is_dangling_link, protocol_is_fifo, protocol_is_not_utf8,
              protocol_is_a_list, protocol_is_bad_yaml, store_under_a_file, store_in_proc, store_is_a_folder,
              store_is_text, store_is_another_programs_database, store_is_damaged, store_of_another_study,
              store_of_a_newer_schema, out_under_a_file, default_out_under_a_file]
OUT_COMMANDS = ["analyze", "report", "export", "publish"]  # the commands that write tables or files
OUT_SITUATIONS = (out_under_a_file, default_out_under_a_file)
CASES = [(c, s) for s in SITUATIONS for c in (OUT_COMMANDS if s in OUT_SITUATIONS else COMMANDS)]


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry under ``folder`` with its kind, size and modification time: 'nothing written'."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = Path(root) / name
            st_ = p.lstat()
            out[str(p.relative_to(folder))] = (st_.st_mode, st_.st_size, st_.st_mtime_ns)
    return out


def run_in_process(args: list) -> tuple[int, str]:
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = main([str(a) for a in args])
    return code, out.getvalue() + err.getvalue()


def check_refusal(code: int, output: str, protocol: Path, expected: str) -> None:
    assert code == 2, output
    assert "Traceback" not in output, output
    assert output.startswith("error: ") and str(protocol) in output, output
    assert expected in output and "Fix:" in output, output


@pytest.mark.parametrize("command, situation", CASES, ids=[f"{c}-{s.__name__}" for c, s in CASES])
def test_every_command_refuses_bad_input_with_exit_2_and_writes_nothing(tmp_path, monkeypatch, command, situation):
    monkeypatch.chdir(tmp_path)  # default outputs (runs/, reports/) would land here
    protocol, extra, expected = situation(tmp_path)
    before = snapshot(tmp_path)
    code, output = run_in_process([command, protocol, *extra])
    check_refusal(code, output, protocol, expected)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("command, situation", [(c, SITUATIONS[(3 * i) % len(SITUATIONS)]) for i, c in
                                                enumerate(COMMANDS)], ids=lambda x: getattr(x, "__name__", x))
def test_the_real_cli_in_a_subprocess(tmp_path, command, situation):
    """One subprocess per command (each with another situation): what a user's shell sees."""
    if situation in OUT_SITUATIONS and command not in OUT_COMMANDS:
        situation = store_is_text
    protocol, extra, expected = situation(tmp_path)
    before = snapshot(tmp_path)
    out = study_cli(command, protocol, *extra, cwd=tmp_path, timeout=300)
    check_refusal(out.returncode, out.stdout + out.stderr, protocol, expected)
    assert snapshot(tmp_path) == before


def test_old_store_without_a_study_name_is_read_and_its_runs_name_the_owner(tmp_path, monkeypatch):
    """Stores written before ``meta.study`` existed: the study of their runs decides."""
    monkeypatch.chdir(tmp_path)
    _real_store(tmp_path / "store.sqlite", study="tiny")
    with contextlib.closing(sqlite3.connect(tmp_path / "store.sqlite")) as con:
        assert con.execute("SELECT value FROM meta WHERE key='study'").fetchone() == ("tiny",)
        con.execute("DELETE FROM meta WHERE key='study'")  # as an older maskstudy wrote it
        con.commit()
    code, output = run_in_process(["status", _store_protocol(tmp_path, tmp_path / "store.sqlite")])
    assert code == 0 and "6 pending" in output, output
    other = write_protocol(tmp_path, tiny_protocol_dict(name="renamed", store=str(tmp_path / "store.sqlite")), "o.yaml")
    code, output = run_in_process(["status", other])
    check_refusal(code, output, other, "holds the results of study 'tiny', not 'renamed'")


def test_store_that_cannot_be_created_leaves_no_folder(tmp_path):
    """The Store class itself (used without the CLI's checks) cleans up after a failed first open."""
    from study.errors import UserError

    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="is a file, not a folder"):
        Store(tmp_path / "notes.txt" / "a" / "b.sqlite")
    with pytest.raises(UserError, match="cannot create the folder /proc/maskstudy-test"):
        Store("/proc/maskstudy-test/a/b.sqlite")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_single_masker_protocol_validates_and_plans(tmp_path):
    path = write_protocol(tmp_path, tiny_protocol_dict(store=str(tmp_path / "runs" / "s.sqlite"),
                                                       maskers=[{"name": "none", "kind": "none"}], analysis={}))
    code, output = run_in_process(["validate", path])
    assert code == 0 and "1 maskers = 3 runs" in output, output
    code, output = run_in_process(["plan", path, "--calibrate", "never"])
    assert code == 0 and "3 runs: 0 done" in output, output
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------------------------
# Generated broken protocols: mutate a valid one, validate it, and never see a traceback.

ODD_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["2e-5", "1e3", "1e999", "nan", "-0", "", "\u200b", "名前", "0x10", "1_000", "~", "[]",
                     "a\0b", "x" * 300, "../" * 40, "/proc/x", "/dev/null"]),
    st.lists(st.integers(min_value=-5, max_value=5), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


def _paths(data, prefix=()):
    """Every key path of a nested protocol dict (list items by index)."""
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for k, v in items:
        yield (*prefix, k)
        yield from _paths(v, (*prefix, k))


@st.composite
def broken_protocol_texts(draw) -> str:
    data = tiny_protocol_dict()
    kind = draw(st.sampled_from(["replace", "replace", "delete", "add", "text", "root"]))
    if kind == "text":  # arbitrary text, often not YAML at all
        return draw(st.text(max_size=80))
    if kind == "root":
        return yaml.safe_dump(draw(ODD_VALUES))
    path = draw(st.sampled_from(list(_paths(data))))
    *parents, last = path
    target = data
    for k in parents:
        target = target[k]
    if kind == "replace":
        target[last] = draw(ODD_VALUES)
    elif kind == "delete":
        del target[last]
    elif isinstance(target, dict):
        target[draw(st.text(min_size=1, max_size=8))] = draw(ODD_VALUES)
    else:
        target.append(draw(ODD_VALUES))
    return yaml.safe_dump(data, allow_unicode=True)


def _write_case(folder: Path, text: str) -> Path:
    data = yaml.safe_load(text) if text.strip() else None
    if isinstance(data, dict) and data.get("store") == "runs/tiny.sqlite":
        text = text.replace("runs/tiny.sqlite", str(folder / "runs" / "tiny.sqlite"))
    path = folder / "p.yaml"
    path.write_text(text)
    return path


def _check_validate(code: int, output: str, path: Path) -> None:
    assert "Traceback" not in output, output
    assert code in (0, 2), output
    if code == 2:
        assert output.startswith("error: ") and str(path) in output, output


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=broken_protocol_texts())
def test_generated_broken_protocols_in_process(text):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        try:
            path = _write_case(folder, text)
        except yaml.YAMLError:  # (generated text that is not YAML: write it as it is)
            path = folder / "p.yaml"
            path.write_text(text)
        before = snapshot(folder)
        code, output = run_in_process(["validate", "--no-smoke", path])  # (the smoke test: test_first_hour)
        _check_validate(code, output, path)
        assert snapshot(folder) == before


def _subprocess_case(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        try:
            path = _write_case(folder, text)
        except yaml.YAMLError:
            path = folder / "p.yaml"
            path.write_text(text)
        out = study_cli("validate", "--no-smoke", path, cwd=folder, timeout=300)
        _check_validate(out.returncode, out.stdout + out.stderr, path)


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=broken_protocol_texts())
def test_generated_broken_protocols_through_the_real_cli(text):
    _subprocess_case(text)


@pytest.mark.slow
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=broken_protocol_texts())
def test_generated_broken_protocols_through_the_real_cli_at_length(text):
    _subprocess_case(text)


@pytest.mark.slow
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(command=st.sampled_from(COMMANDS), situation=st.sampled_from(SITUATIONS))
def test_generated_file_system_situations_through_the_real_cli(command, situation):
    if situation in OUT_SITUATIONS and command not in OUT_COMMANDS:
        command = "analyze"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        protocol, extra, expected = situation(folder)
        before = snapshot(folder)
        out = study_cli(command, protocol, *extra, cwd=folder, timeout=300)
        check_refusal(out.returncode, out.stdout + out.stderr, protocol, expected)
        assert snapshot(folder) == before


def test_a_closed_pipe_ends_the_command_quietly(tmp_path):
    """`study plan PROTOCOL | head -1`: the reader goes away before the command has printed all;
    it stops with exit 0 and no traceback (the read end is closed before it writes anything)."""
    import subprocess
    import sys

    path = write_protocol(tmp_path, tiny_protocol_dict(store=str(tmp_path / "s.sqlite")))
    proc = subprocess.Popen([sys.executable, "-m", "study.cli", "plan", "--calibrate", "never", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err
