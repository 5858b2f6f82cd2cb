"""Masker plugins through the real CLI: errors exit 2 naming the plugin; a plugin kind trains in
forked and spawned workers (on a CSV task: file datasets reach the workers too); editing a plugin
changes only its own runs' ids."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "execution"))
from exectools import cli, query, write_protocol  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "span_masking.py"
MASKERS = [{"name": "none", "kind": "none"}, {"name": "random", "kind": "random-token", "rate": 0.2},
           {"name": "span", "kind": "span", "rate": 0.2, "mean_span": 2}]

GOOD = '''
from dataclasses import dataclass
from study.maskers import Masker, register

@dataclass(frozen=True)
class P:
    rate: float = 0.1

@register("{kind}")
class M(Masker):
    Params = P
    level = "input"
'''


def _protocol(tmp: Path, plugins, maskers=MASKERS, **kw) -> Path:
    return write_protocol(tmp, plugins=plugins, maskers=maskers, **kw)


def _bad(tmp: Path, plugins, maskers=None) -> str:
    out = cli("validate", _protocol(tmp, plugins, maskers or MASKERS[:2]), cwd=tmp, timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    assert "plugins[" in out.stderr and str(tmp / "p.yaml") in out.stderr
    return out.stderr


def test_plugin_errors_exit_2_naming_the_plugin(tmp_path):
    assert "plugin " + str(tmp_path / "nowhere.py") in _bad(tmp_path, ["nowhere.py"])  # missing file
    assert "no_such_module_xyz" in _bad(tmp_path, ["no_such_module_xyz"])  # missing module
    (tmp_path / "broken.py").write_text("import numpy\nraise RuntimeError('boom in the plugin')\n")
    err = _bad(tmp_path, ["broken.py"])
    assert "broken.py" in err and "RuntimeError: boom in the plugin" in err  # import error, with its message
    (tmp_path / "clash.py").write_text(GOOD.format(kind="random-token"))
    err = _bad(tmp_path, ["clash.py"])
    assert "clash.py" in err and "'random-token' (a built-in kind) is registered twice" in err
    (tmp_path / "a.py").write_text(GOOD.format(kind="mine"))
    (tmp_path / "b.py").write_text(GOOD.format(kind="mine"))
    err = _bad(tmp_path, ["a.py", "b.py"])
    assert "plugins[1]" in err and "b.py" in err and "'mine' is registered twice" in err
    (tmp_path / "mutable.py").write_text(GOOD.format(kind="mut").replace("@dataclass(frozen=True)", "@dataclass"))
    err = _bad(tmp_path, ["mutable.py"])
    assert "mutable.py" in err and "Params must be a @dataclass(frozen=True)" in err
    (tmp_path / "empty.py").write_text("X = 1\n")
    assert "registers no masker kind" in _bad(tmp_path, ["empty.py"])


def test_bad_plugin_params_name_the_field_and_the_plugin(tmp_path):
    shutil.copy(EXAMPLE, tmp_path / "span_masking.py")
    maskers = [MASKERS[0], {"name": "span", "kind": "span", "rate": 0.2, "mean_span": 0.5}]
    out = cli("validate", _protocol(tmp_path, ["span_masking.py"], maskers), cwd=tmp_path, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "maskers[1].mean_span: must be at least 1 token" in out.stderr
    assert "comes from plugin " + str(tmp_path / "span_masking.py") in out.stderr


def _plan_ids(tmp: Path, path: Path) -> dict[str, str]:
    out = cli("plan", "--calibrate", "never", path, cwd=tmp, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines() if line[:16].isalnum() and len(line.split()) > 5]
    return {f"{r[3]}/{r[4]}": r[0] for r in rows}


def test_editing_a_plugin_changes_only_its_runs_ids(tmp_path):
    (tmp_path / "plug").mkdir()
    plugin = tmp_path / "plug" / "span_masking.py"
    shutil.copy(EXAMPLE, plugin)
    path = _protocol(tmp_path, ["plug/span_masking.py"], seeds=[0, 1])
    before = _plan_ids(tmp_path, path)
    assert len(before) == 6
    plugin.write_text(plugin.read_text() + "\n# an edit\n")
    after = _plan_ids(tmp_path, path)
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {"span/0", "span/1"}
    # Moving the plugin (and the protocol with it) changes nothing: paths are not hashed.
    moved = tmp_path / "elsewhere"
    shutil.copytree(tmp_path / "plug", moved / "plug")
    assert _plan_ids(moved, _protocol(moved, ["plug/span_masking.py"], seeds=[0, 1])) == after


def _csv_task(folder: Path) -> list[dict]:
    """A local CSV task with string labels (the workers read it from absolute paths in the spec)."""
    folder.mkdir()
    for split, n in (("train", 24), ("eval", 9)):
        lines = ["text,mood"] + [f"sentence {i} is {('good', 'bad', 'fine')[i % 3]} today,{('pos', 'neg', 'mid')[i % 3]}"
                                 for i in range(n)]
        (folder / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return [{"name": "moods", "dataset": "file", "train_file": "data/train.csv", "eval_file": "data/eval.csv",
             "text_fields": ["text"], "label_field": "mood", "metric": "weighted_f1"}]


@pytest.mark.parametrize("start", ["forkserver", "spawn"])
def test_plugin_masker_trains_in_every_local_launcher(tmp_path, start):
    shutil.copy(EXAMPLE, tmp_path / "span_masking.py")
    path = _protocol(tmp_path, ["span_masking.py"], MASKERS[::2], execution={"worker_start": start},
                     tasks=_csv_task(tmp_path / "data"))
    out = cli("run", path, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert ("workers forked from a preloaded server" if start == "forkserver" else "workers fresh interpreters") \
        in out.stderr
    assert "fresh interpreter instead" not in out.stderr
    store = tmp_path / "runs" / "exec.sqlite"
    rows = query(store, "SELECT masker_kind, status, realised_mask_rate, masker_state, env, primary_metric FROM runs "
                        "ORDER BY masker_kind")
    assert [(k, s, m) for k, s, *_, m in rows] == [("none", "done", "weighted_f1"), ("span", "done", "weighted_f1")]
    assert json.loads(rows[0][4])["labels"] == ["mid", "neg", "pos"]
    assert query(store, "SELECT COUNT(*) FROM predictions") == [(18,)]
    kind, _, rate, state, env, _ = rows[1]
    assert 0.05 < rate < 0.4  # the plugin's apply ran on the training batches
    assert json.loads(state) == {"expected_span_length": pytest.approx(2.0 - 2 ** -9)}  # Σ_{k<10} 0.5^k
    assert json.loads(env)["env_vars"]["MASKSTUDY_WORKER_START"] == start


@pytest.mark.parametrize("backend", ["ray", "slurm"])
def test_plugin_masker_trains_through_ray_and_slurm(tmp_path, backend):
    """Ray tasks and Slurm jobs (submitit's local executor) import the plugin from the spec too."""
    pytest.importorskip("ray" if backend == "ray" else "submitit")
    shutil.copy(EXAMPLE, tmp_path / "span_masking.py")
    execution = {"ray": {"num_cpus": 1}} if backend == "ray" else \
        {"slurm": {"executor": "local", "gpus_per_task": 0, "time_min": 10, "folder": str(tmp_path / "slurm")}}
    path = _protocol(tmp_path, ["span_masking.py"], MASKERS[::2], execution=execution,
                     tasks=_csv_task(tmp_path / "data"))
    out = cli("run", path, "--backend", backend, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = query(tmp_path / "runs" / "exec.sqlite",
                 "SELECT masker_kind, status, realised_mask_rate FROM runs ORDER BY masker_kind")
    assert [r[:2] for r in rows] == [("none", "done"), ("span", "done")] and 0.05 < rows[1][2] < 0.4


def test_importable_module_plugin(tmp_path, monkeypatch):
    from study.protocol import load_protocol
    from study.spec import expand

    (tmp_path / "my_module_maskers.py").write_text(GOOD.format(kind="from-a-module"))
    monkeypatch.syspath_prepend(str(tmp_path))
    maskers = [MASKERS[0], {"name": "mod", "kind": "from-a-module", "rate": 0.3}]
    path = _protocol(tmp_path, ["my_module_maskers"], maskers)
    try:
        specs = expand(load_protocol(path))
        assert specs[1].plugins == ["my_module_maskers"] and specs[1].plugin_sha256 and specs[0].plugin_sha256 is None
        assert expand(load_protocol(path))[1].run_id == specs[1].run_id  # loaded again in one process: same kind
    finally:  # this process's registry is shared with other tests: leave it as it was
        from study import plugins
        from study.maskers import MASKERS as registry

        registry.unregister("from-a-module")
        plugins._LOADED.pop("my_module_maskers", None)
        sys.modules.pop("my_module_maskers", None)
