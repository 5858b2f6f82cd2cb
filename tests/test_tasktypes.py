"""Task types as one abstraction: the registry, did-you-mean, a plugin task type trained by the
real run_one, and no task-type branch left where the issue found them."""

from __future__ import annotations

import inspect
import re

import pytest
from protocoltools import study_cli, tiny_protocol_dict, write_protocol

import study.models
import study.protocol
import study.spec
import study.tasks.files
import study.train
from study.protocol import parse_protocol
from study.spec import expand
from study.tasktypes import TASK_TYPES, TaskType, get_task_type

PLUGIN = '''
from study.tasktypes import register_task_type
from study.tasktypes.classification import SequenceClassification

@register_task_type("accuracy-classification")
class AccuracyClassification(SequenceClassification):
    """Sentence classification scored by accuracy by default (a plugin task type)."""
    default_metric = "accuracy"
'''


def test_builtin_task_types_are_registered_and_own_their_settings():
    assert {"sequence-classification", "token-classification", "seq2seq"} <= set(TASK_TYPES.names())
    seq, tok, gen = (get_task_type(n) for n in ("sequence-classification", "token-classification", "seq2seq"))
    assert all(isinstance(t, TaskType) for t in (seq, tok, gen))
    assert seq.model_class == "AutoModelForSequenceClassification" and seq.uses_pooling
    assert tok.model_class == "AutoModelForTokenClassification" and not tok.uses_pooling
    assert tok.default_metric == "weighted_f1" and gen.default_metric == "bleu"
    assert "bleu" in gen.metrics and "bleu" not in seq.metrics and "macro_f1" not in gen.metrics
    assert seq.collapse == "classes" and gen.collapse == "generations"


def test_no_task_type_branch_left():
    """train.py, models.py, spec.py, tasks/files.py and protocol.py ask the task type; none compares
    task_type with a name."""
    for module in (study.train, study.models, study.spec, study.tasks.files, study.protocol):
        source = inspect.getsource(module)
        assert not re.search(r"task_type\s*[!=]=\s*[\"']", source), module.__name__
    assert "token-classification" not in inspect.getsource(study.train.run_one)


def test_unknown_task_type_exits_2_with_did_you_mean(tmp_path):
    p = tiny_protocol_dict(store=str(tmp_path / "runs" / "t.sqlite"))
    p["tasks"][0]["task_type"] = "sequence-clasification"
    out = study_cli("validate", write_protocol(tmp_path, p), cwd=tmp_path)
    assert out.returncode == 2 and "tasks[0].task_type" in out.stderr
    assert "Did you mean 'sequence-classification'" in out.stderr and "Traceback" not in out.stderr


def test_a_plugin_task_type_validates_and_trains(tmp_path):
    (tmp_path / "acc_type.py").write_text(PLUGIN)
    p = tiny_protocol_dict(store=str(tmp_path / "runs" / "t.sqlite"), seeds=[0], plugins=["acc_type.py"],
                           maskers=[{"name": "none", "kind": "none"}])
    p["tasks"][0].update(task_type="accuracy-classification", max_train_examples=16, max_eval_examples=8)
    path = write_protocol(tmp_path, p)
    out = study_cli("validate", path, cwd=tmp_path)
    assert out.returncode == 2 and "dataset 'tweets-sentiment' is a sequence-classification task" in out.stderr
    # a file dataset takes any task type whose rows it can read
    rows = "text,label\n" + "\n".join(f"{w} text number {i},{'pos' if i % 2 else 'neg'}"
                                      for i, w in enumerate(["good", "bad"] * 8))
    (tmp_path / "d.csv").write_text(rows)
    p["tasks"] = [{"name": "f", "dataset": "file", "task_type": "accuracy-classification", "train_file": "d.csv",
                   "eval_file": "d.csv", "text_fields": ["text"]}]
    path = write_protocol(tmp_path, p)
    out = study_cli("validate", path, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    try:
        spec = expand(parse_protocol(__import__("yaml").safe_load(path.read_text()), str(path)))[0]
        result = study.train.run_one(spec)
        assert result.primary_metric == "accuracy" and "accuracy" in result.final_metrics
        assert len(result.predictions) == 16
    finally:
        TASK_TYPES.unregister("accuracy-classification")


def test_task_type_registry_refuses_a_second_registration():
    from study.tasktypes import register_task_type

    with pytest.raises(ValueError, match="registered twice"):
        @register_task_type("seq2seq")
        class Again(TaskType):
            pass
