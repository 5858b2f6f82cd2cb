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
