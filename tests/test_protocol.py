"""Protocol validation: every file in protocols/ is valid; each bad input names its key path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from protocoltools import ROOT, tiny_protocol_dict, write_protocol

from study.errors import ProtocolError
from study.protocol import load_protocol, parse_protocol
from study.spec import expand

PROTOCOLS = sorted((ROOT / "protocols").glob("*.yaml"))


@pytest.mark.parametrize("path", PROTOCOLS, ids=[p.name for p in PROTOCOLS])
def test_every_shipped_protocol_validates(path):
    p = load_protocol(path)
    assert p.seeds and p.tasks and p.models and p.maskers
    assert len(p.sha256) == 64


def test_seed_range_form():
    p = parse_protocol(tiny_protocol_dict(seeds={"start": 3, "count": 4}))
    assert p.seeds == (3, 4, 5, 6)


def test_masker_params_become_typed_dataclasses():
    p = parse_protocol(tiny_protocol_dict())
    m = p.masker("random-0.2")
    assert m.kind == "random-token" and m.params.rate == 0.2
    assert m.to_dict() == {"name": "random-0.2", "kind": "random-token", "rate": 0.2}


def _bad(path_fragment: str, **overrides):
    with pytest.raises(ProtocolError) as err:
        parse_protocol(tiny_protocol_dict(**overrides), file="bad.yaml")
    assert err.value.path.startswith(path_fragment), (err.value.path, str(err.value))
    assert str(err.value).startswith("bad.yaml: ")
    return str(err.value)


def test_unknown_top_level_key_with_did_you_mean():
    data = tiny_protocol_dict()
    data["trainig"] = data.pop("training")
    with pytest.raises(ProtocolError) as err:
        parse_protocol(data)
    assert err.value.path == "trainig" and "training" in str(err.value)


def test_unknown_nested_key():
    msg = _bad("training.lr", training={**tiny_protocol_dict()["training"], "lr": 0.1})
    assert "learning_rate" in msg or "allowed keys" in msg


@pytest.mark.parametrize("overrides, path", [
    ({"training": {"epochs": "two", "batch_size": 8, "learning_rate": 1e-4, "max_length": 16}}, "training.epochs"),
    ({"training": {"epochs": 1, "batch_size": 8, "learning_rate": "fast", "max_length": 16}}, "training.learning_rate"),
    ({"training": {"epochs": 1, "batch_size": 8, "learning_rate": ".nan", "max_length": 16}}, "training.learning_rate"),
    ({"training": {"epochs": 1, "batch_size": 8, "learning_rate": float("inf"), "max_length": 16}},
     "training.learning_rate"),
    ({"training": {"epochs": 1.5, "batch_size": 8, "learning_rate": 1e-4, "max_length": 16}}, "training.epochs"),
    ({"seeds": [2**63]}, "seeds"),
    ({"seeds": {"start": 0, "count": 10**12}}, "seeds.count"),
    ({"training": {"epochs": True, "batch_size": 8, "learning_rate": 1e-4, "max_length": 16}}, "training.epochs"),
    ({"seeds": "0,1"}, "seeds"),
    ({"seeds": []}, "seeds"),
    ({"seeds": [0, 0, 1]}, "seeds"),
    ({"seeds": [-1]}, "seeds"),
    ({"tasks": []}, "tasks"),
    ({"models": []}, "models"),
    ({"maskers": []}, "maskers"),
    ({"maskers": [{"name": "none", "kind": "none"}, {"name": "none", "kind": "random-token", "rate": 0.1}]},
     "maskers[1].name"),
    ({"maskers": [{"name": "none", "kind": "none"}, {"name": "r", "kind": "random-token", "rate": 1.5}]},
     "maskers[1].rate"),
    ({"maskers": [{"name": "none", "kind": "none"}, {"name": "r", "kind": "random-token", "rate": -0.1}]},
     "maskers[1].rate"),
    ({"maskers": [{"name": "none", "kind": "none"}, {"name": "r", "kind": "random-tokn", "rate": 0.1}]},
     "maskers[1].kind"),
    ({"maskers": [{"name": "none", "kind": "none"}, {"name": "r", "kind": "random-token"}]}, "maskers[1].rate"),
    ({"maskers": [{"name": "none", "kind": "none"}, {"name": "r", "kind": "random-token", "rate": 0.1,
                                                      "p": 0.2}]}, "maskers[1].p"),
    ({"maskers": [{"name": "a", "kind": "random-token", "rate": 0.1},
                  {"name": "b", "kind": "random-token", "rate": 0.1}], "analysis": {"baseline": "a"}},
     "maskers[1]"),
    ({"tasks": [{"name": "t", "dataset": "tweets-sentimnt"}]}, "tasks[0].dataset"),
    ({"tasks": [{"name": "t", "dataset": "tweets-sentiment", "max_train_examples": 1}]}, "tasks[0].max_train_examples"),
    ({"models": [{"name": "m", "source": "builtin:minilm-l7"}]}, "models[0].source"),
    ({"models": [{"name": "m", "source": "./no/such/dir"}]}, "models[0].source"),
    ({"models": [{"name": "m", "source": "builtin:minilm-l6", "num_hidden_layers": 0}]}, "models[0].num_hidden_layers"),
    ({"analysis": {"baseline": "nnone"}}, "analysis.baseline"),
    ({"analysis": {"baseline": "none", "alpha": 1.5}}, "analysis.alpha"),
    ({"analysis": {"comparisons": [{"treatment": "random-0.2", "baseline": "missing"}]}},
     "analysis.comparisons[0].baseline"),
    ({"analysis": {}}, "analysis.baseline"),
    ({"execution": {"cpu_slots": 0}}, "execution.cpu_slots"),
])
def test_bad_inputs_name_their_key_path(overrides, path):
    _bad(path, **overrides)


def test_numbers_as_people_write_them_in_yaml(tmp_path):
    """PyYAML reads `2e-5` and `1e3` as text (YAML 1.1 wants `2.0e-5`); they mean the numbers they spell."""
    text = write_protocol(tmp_path, tiny_protocol_dict()).read_text()
    text = text.replace("learning_rate: 0.0003", "learning_rate: 2e-5").replace("n_boot: 500", "n_boot: 1e3")
    path = tmp_path / "numbers.yaml"
    path.write_text(text.replace("rate: 0.2", "rate: 2E-1"))
    p = load_protocol(path)
    assert p.training.learning_rate == 2e-5 and isinstance(p.training.learning_rate, float)
    assert p.analysis.n_boot == 1000 and isinstance(p.analysis.n_boot, int)
    assert p.masker("random-0.2").params.rate == 0.2
    # The same run_ids as the protocol written with decimal points.
    plain = parse_protocol(tiny_protocol_dict(training={**tiny_protocol_dict()["training"], "learning_rate": 2.0e-5},
                                              analysis={**tiny_protocol_dict()["analysis"], "n_boot": 1000}))
    assert [s.run_id for s in expand(p)] == [s.run_id for s in expand(plain)]


def test_single_masker_is_a_seed_variance_study():
    for analysis in ({}, {"baseline": "none"}):
        p = parse_protocol(tiny_protocol_dict(maskers=[{"name": "none", "kind": "none"}], analysis=analysis))
        assert [m.name for m in p.maskers] == ["none"] and p.comparisons() == []
        assert len(expand(p)) == 3  # one masker per cell: seeds × tasks × models


def test_missing_required_top_level_key():
    data = tiny_protocol_dict()
    del data["store"]
    with pytest.raises(ProtocolError) as err:
        parse_protocol(data)
    assert err.value.path == "store" and "missing" in str(err.value)


def test_yaml_syntax_error_and_missing_file(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ProtocolError, match="not valid YAML"):
        load_protocol(bad)
    with pytest.raises(ProtocolError, match="file not found"):
        load_protocol(tmp_path / "nope.yaml")


def test_protocol_paths_that_are_not_readable_files(tmp_path):
    (tmp_path / "dangling.yaml").symlink_to(tmp_path / "gone.yaml")
    os.mkfifo(tmp_path / "pipe.yaml")  # read_bytes() would block forever
    (tmp_path / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    (tmp_path / "list.yaml").write_text("- name: tiny\n")
    (tmp_path / "file").write_text("")
    for name, problem in [(".", "is a folder"), ("dangling.yaml", "symbolic link"), ("pipe.yaml", "not a regular file"),
                          ("latin1.yaml", "not valid YAML"), ("list.yaml", "mapping at the top level"),
                          ("file/p.yaml", "cannot be read")]:
        with pytest.raises(ProtocolError, match=problem) as err:
            load_protocol(tmp_path / name)
        assert str(err.value).startswith(str(tmp_path / name)) and "Fix:" in str(err.value), str(err.value)


def test_cli_exit_2_and_nothing_written(tmp_path):
    data = tiny_protocol_dict(store=str(tmp_path / "runs" / "x.sqlite"))
    data["maskers"][1]["rate"] = 2.0
    path = write_protocol(tmp_path, data)
    for command in ("validate", "run", "plan"):
        out = subprocess.run([sys.executable, "-m", "study.cli", command, str(path)], capture_output=True,
                             text=True, cwd=tmp_path)
        assert out.returncode == 2, out.stderr
        assert "maskers[1].rate" in out.stderr and "Fix:" in out.stderr
    assert not (tmp_path / "runs").exists()


def test_cli_validate_checks_local_data_dirs(tmp_path):
    data = tiny_protocol_dict(tasks=[{"name": "mrpc", "dataset": "glue/mrpc", "data_dir": str(tmp_path / "nope")}])
    path = write_protocol(tmp_path, data)
    out = subprocess.run([sys.executable, "-m", "study.cli", "validate", str(path)], capture_output=True, text=True)
    assert out.returncode == 2 and "tasks[0].data_dir" in out.stderr


def test_store_path_is_relative_to_the_protocol_file_or_without_one_to_cwd(tmp_path):
    p = parse_protocol(tiny_protocol_dict(store="runs/a.sqlite"))
    assert p.store_path == Path.cwd() / "runs/a.sqlite"
    p = parse_protocol(tiny_protocol_dict(store="runs/a.sqlite"), file=str(tmp_path / "sub" / "p.yaml"))
    assert p.store_path == tmp_path / "sub" / "runs" / "a.sqlite"
