"""One registry mechanism for masker kinds, datasets and built-in models; the public masker
registration a plugin uses; the fork server's public model preload."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from study.errors import ProtocolError
from study.maskers import MASKERS, Masker, register
from study.maskers.kinds import BUILTIN
from study.models import BUILTIN_MODELS, check_model_source
from study.protocol import parse_protocol
from study.registry import Registry, masker_class, masker_params
from study.spec import expand
from study.tasks import DATASETS

REPO = Path(__file__).resolve().parents[1]

PROTOCOL = {
    "name": "reg", "seeds": [0], "store": "unused.sqlite",
    "tasks": [{"name": "t", "dataset": "tweets-sentiment", "max_train_examples": 16, "max_eval_examples": 8}],
    "models": [{"name": "m", "source": "builtin:minilm-l6", "num_hidden_layers": 1}],
    "maskers": [{"name": "none", "kind": "none"}, {"name": "random", "kind": "random-token", "rate": 0.2}],
    "training": {"epochs": 1, "batch_size": 8, "learning_rate": 1.0e-4, "max_length": 16},
    "analysis": {"baseline": "none"},
}


def test_registry_miss_names_the_closest_entry_and_lists_the_rest():
    reg = Registry("colour")
    reg.register("crimson", 1)
    reg.register("teal", 2)
    with pytest.raises(KeyError) as err:
        reg.get("crimsom")
    assert "unknown colour 'crimsom'. Did you mean 'crimson'?" in str(err.value)
    assert "Known: crimson, teal" in str(err.value)
    assert reg.names() == ["crimson", "teal"] and list(reg) == ["crimson", "teal"] and len(reg) == 2
    assert "teal" in reg and "navy" not in reg and ["unhashable"] not in reg


def test_registry_refuses_a_name_twice_and_scoped_entries_leave_on_exit():
    reg = Registry("colour")

    @reg.register("teal")
    class Teal:
        pass

    assert reg.get("teal") is Teal
    with pytest.raises(ValueError, match="colour 'teal' is registered twice"):
        reg.register("teal", object())
    with pytest.raises(RuntimeError), reg.scoped("navy", 3):  # removed even when the block raises
        assert reg.get("navy") == 3
        raise RuntimeError
    assert "navy" not in reg
    with pytest.raises(ValueError, match="registered twice"), reg.scoped("teal", 4):
        pass
    assert reg.get("teal") is Teal  # a refused scoped entry removed nothing


def test_datasets_and_builtin_models_are_registries_tests_can_extend_for_a_block(tmp_path):
    assert isinstance(DATASETS, Registry) and isinstance(BUILTIN_MODELS, Registry)
    with pytest.raises(ProtocolError, match="Did you mean 'tweets-sentiment'"):
        parse_protocol({**PROTOCOL, "tasks": [{**PROTOCOL["tasks"][0], "dataset": "tweets-sentimnt"}]})
    assert "Did you mean 'minilm-l6'" in check_model_source("builtin:minilm-l5")[0]

    data = {**PROTOCOL, "tasks": [{**PROTOCOL["tasks"][0], "dataset": "tweets-copy"}],
            "models": [{"name": "m", "source": "builtin:tiny"}]}
    with DATASETS.scoped("tweets-copy", DATASETS.get("tweets-sentiment")), \
            BUILTIN_MODELS.scoped("tiny", lambda: str(tmp_path)):
        assert len(expand(parse_protocol(data))) == 2
        assert check_model_source("builtin:tiny") is None
    assert "tweets-copy" not in DATASETS and "tiny" not in BUILTIN_MODELS
    with pytest.raises(ProtocolError, match="unknown dataset 'tweets-copy'"):
        parse_protocol(data)


def test_builtin_kinds_placeholders_match_their_implementations():
    assert set(BUILTIN) <= set(MASKERS.names())
    for kind, (params, target) in BUILTIN.items():
        assert MASKERS.get(kind).target == target  # stays the placeholder; resolved on use
        cls = masker_class(kind)  # imports the implementation: its own @register accepted the placeholder
        assert issubclass(cls, Masker) and cls.Params is params is masker_params(kind)
        assert dataclasses.is_dataclass(params) and params.__dataclass_params__.frozen
        assert "kind" not in vars(cls)
    assert not hasattr(Masker, "kind")


def test_register_refuses_clashes_and_unfrozen_params():
    with pytest.raises(ValueError, match=r"masker kind 'tlm' \(a built-in kind\) is registered twice"):
        @register("tlm")
        class Impostor(Masker):
            pass

    @dataclasses.dataclass
    class Mutable:
        rate: float = 0.1

    with pytest.raises(TypeError, match=r"Params must be a @dataclass\(frozen=True\)"):
        @register("mutable-params")
        class Loose(Masker):
            Params = Mutable

    with pytest.raises(TypeError, match="not a subclass of study.maskers.Masker"):
        register("not-a-masker")(dict)
    assert "mutable-params" not in MASKERS and "not-a-masker" not in MASKERS


PLUGIN = '''
from dataclasses import dataclass

from study.maskers import Masker, ParamError, register


@dataclass(frozen=True)
class EveryOtherParams:
    stride: int = 2

    def __post_init__(self):
        if self.stride < 1:
            raise ParamError("stride", f"must be at least 1, got {self.stride}", "use 1 or more")


@register("every-other")
class EveryOther(Masker):
    Params = EveryOtherParams
    level = "input"
'''

PLUGIN_USER = '''
import sys, json
import my_maskers  # noqa: F401  (registers every-other, exactly as a built-in module does)
from study.errors import ProtocolError
from study.protocol import parse_protocol
from study.registry import masker_class, masker_kinds
from study.spec import expand

data = json.loads(sys.argv[1])
ok = expand(parse_protocol(data))
data["maskers"][1]["stride"] = 0
try:
    parse_protocol(data)
    bad = None
except ProtocolError as e:
    bad = str(e)
try:
    import my_maskers_again  # noqa: F401  (a second module claiming the same kind)
    twice = None
except ValueError as e:
    twice = str(e)
print(json.dumps({"kinds": masker_kinds(), "run_ids": [s.run_id for s in ok], "bad": bad, "twice": twice,
                  "cls": masker_class("every-other").__name__, "torch": "torch" in sys.modules}))
'''


def test_a_plugin_registers_a_kind_exactly_as_built_ins_do(tmp_path):
    import json

    (tmp_path / "my_maskers.py").write_text(PLUGIN)
    (tmp_path / "my_maskers_again.py").write_text(PLUGIN)
    data = {**PROTOCOL, "maskers": [{"name": "none", "kind": "none"}, {"name": "eo", "kind": "every-other", "stride": 3}]}
    proc = subprocess.run([sys.executable, "-c", PLUGIN_USER, json.dumps(data)], capture_output=True, text=True,
                          cwd=tmp_path, env={**__import__("os").environ,
                                             "PYTHONPATH": f"{tmp_path}:{REPO}"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "every-other" in out["kinds"] and out["cls"] == "EveryOther" and len(out["run_ids"]) == 2
    assert "maskers[1].stride: must be at least 1, got 0" in out["bad"]
    assert "masker kind 'every-other' is registered twice" in out["twice"]
    assert out["torch"] is False  # registering and validating a plugin kind needs no torch


def test_preload_imports_the_model_and_tokenizer_classes_without_building_a_model():
    code = textwrap.dedent('''
        import gc, sys, time
        from study.models import preload
        preload("builtin:minilm-l6")
        import transformers
        built = [type(o).__name__ for o in gc.get_objects() if isinstance(o, transformers.PreTrainedModel)]
        print(sorted(m for m in sys.modules if m.startswith("transformers.models.bert.")), built)
        t0 = time.monotonic()
        try:
            preload("maskstudy-test/not-a-model", local_files_only=True)
        except OSError:
            print("OSError", time.monotonic() - t0)
    ''')
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    modules, miss = proc.stdout.strip().splitlines()[-2:]
    assert "'transformers.models.bert.modeling_bert'" in modules and "tokenization_bert" in modules
    assert modules.endswith(" []")  # no model object was built (no weights read)
    assert miss.startswith("OSError") and float(miss.split()[1]) < 10  # local files only: no network retries
