"""``study validate``'s masker smoke test, and what ``max_length`` cuts.

Every masker of a protocol, plugins included, runs its hooks (``setup``, ``attach``, ``apply``, ``after_backward``, ``detach``, ``state``) for two real
training steps on a small real batch of the protocol's first task, with a tiny model (the
built-in MiniLM cut to one layer), before any training is spent.

It runs in a child process (``python -m study.smoke PROTOCOL``), so ``study validate`` itself
stays torch-free. A masker whose plugin code raises — or that breaks the training loop where the
``none`` masker does not — makes ``validate`` exit 2 naming the plugin, the hook and the error.
When the data or the tiny model cannot be loaded here (a hub dataset offline), the smoke test
says so and checks nothing: that is not the masker's fault. The child also measures, per task
and model, the share of examples (token tasks: and words) ``max_length`` cuts.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

from study.errors import UserError

TINY_MODEL = {"source": "builtin:minilm-l6", "num_hidden_layers": 1}
TRAIN_EXAMPLES, EVAL_EXAMPLES, BATCH, STEPS = 32, 8, 8, 2


def smoke_spec(spec):
    """A grid run reduced to a smoke test: small data, the tiny model, one thread, no checkpoints."""
    task = {**spec.task, "max_train_examples": min(spec.task.get("max_train_examples") or TRAIN_EXAMPLES,
                                                   TRAIN_EXAMPLES),
            "max_eval_examples": min(spec.task.get("max_eval_examples") or EVAL_EXAMPLES, EVAL_EXAMPLES)}
    model = {**spec.model, **TINY_MODEL, "replacement_token": None}
    training = {**spec.training, "epochs": 1, "batch_size": min(spec.training["batch_size"], BATCH),
                "eval_batch_size": EVAL_EXAMPLES, "early_stopping_patience": None}
    return dataclasses.replace(spec, task=task, model=model, training=training,
                               execution={**spec.execution, "threads_per_run": 1, "checkpoint_every_steps": None,
                                          "checkpoint_every_min": None, "deterministic": False})


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"[:300]


def _smoke(spec) -> dict:
    from study.plugins import plugin_fault
    from study.train import run_one

    try:
        run_one(smoke_spec(spec), max_steps=STEPS)
    except Exception as e:  # noqa: BLE001  (every error is reported, classified)
        fault = plugin_fault(e, spec.masker["kind"])
        if fault is not None:
            return {"ok": False, "plugin": fault.plugin.ref, "hook": fault.hook, "detail": fault.describe()}
        return {"ok": False, "plugin": None, "hook": None, "detail": _first_line(e)}
    return {"ok": True}


def child(protocol_path: str) -> int:
    """The child process: one JSON line per masker (and one for the ``none`` reference)."""
    import torch

    from study.protocol import load_protocol
    from study.spec import expand

    torch.set_num_threads(1)
    p = load_protocol(protocol_path)
    first = {}
    for s in expand(p):
        if s.task["name"] == p.tasks[0].name and s.model["name"] == p.models[0].name:
            first.setdefault(s.masker["name"], s)
    reference = dataclasses.replace(next(iter(first.values())), masker={"name": "none", "kind": "none"},
                                    plugin_sha256=None)
    print(json.dumps({"masker": None, **_smoke(reference)}), flush=True)
    for name, spec in first.items():
        print(json.dumps({"masker": name, "kind": spec.masker["kind"], **_smoke(spec)}), flush=True)
    for task in p.tasks:
        for model in p.models:
            print(json.dumps({"truncation": f"{task.name}/{model.name}", **_truncation(p, task, model)}), flush=True)
    return 0


def _truncation(p, task, model) -> dict:
    """What ``max_length`` cuts of this task's (subsampled) data with this model's tokenizer."""
    from transformers import AutoTokenizer

    from study.models import resolve_source
    from study.tasks import load_task
    from study.tasktypes import get_task_type

    try:
        data = load_task(task)
        # what is on this machine only: validate never waits on a hub
        tokenizer = AutoTokenizer.from_pretrained(resolve_source(model.source), local_files_only=True)
    except Exception as e:  # noqa: BLE001  (offline hub, missing files: not measured, not an error)
        return {"error": _first_line(e)}
    n, task_type = p.training.max_length, get_task_type(data.task_type)
    cut = {split: task_type.truncation(tokenizer, examples, n)
           for split, examples in (("train", data.train), ("eval", data.eval))}
    return {"metric": task.metric or data.primary_metric, "labels": list(data.label_names),
            **{split: c for split, c in cut.items() if c is not None}}


def check_maskers(protocol, stream=None) -> None:
    """Run the smoke test of ``protocol`` (loaded from its file) in a child; UserError for a broken masker."""
    stream = stream or sys.stderr
    proc = subprocess.run([sys.executable, "-m", "study.smoke", str(Path(protocol.source).absolute())],
                          capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"{protocol.source}: warning: the masker smoke test did not run ({tail[:300]}); maskers not checked",
              file=stream)
        return
    cuts = [ln for ln in lines if "truncation" in ln]
    lines = [ln for ln in lines if "truncation" not in ln]
    reference, results = lines[0], lines[1:]
    for r in results:
        if r["ok"]:
            continue
        index = next(i for i, m in enumerate(protocol.maskers) if m.name == r["masker"])
        plugin = next((p for p in protocol.plugins if r["kind"] in p.kinds), None)
        if r["plugin"] is None and not reference["ok"]:
            print(f"{protocol.source}: warning: the masker smoke test could not train the `none` masker either "
                  f"({reference['detail']}): maskers not checked", file=stream)
            return
        if plugin is None and r["plugin"] is None:
            raise UserError(f"{protocol.source}: maskers[{index}] ({r['masker']}, kind {r['kind']}): two training "
                            f"steps on a small batch failed: {r['detail']}. Fix: check its parameters; the `none` "
                            "masker trains on the same batch.")
        i = protocol.plugins.index(plugin)
        where = r["detail"] if r["plugin"] else (f"the training loop failed after its hooks: {r['detail']} (the "
                                                 "`none` masker trains on the same batch)")
        hook = f"{r['hook']}: " if r["hook"] else ""
        raise UserError(f"{protocol.source}: plugins[{i}] ({Path(plugin.ref).name}): masker {r['masker']!r} "
                        f"(kind {r['kind']!r}): {hook}{where}. Fix: correct the plugin (README \"Your own masker: "
                        "plugins\" says what each hook receives and returns); nothing was trained.")
    print(f"{protocol.source}: maskers ok — {len(results)} masker(s) trained 2 steps on a small batch of "
          f"{protocol.tasks[0].name} with a 1-layer MiniLM", file=stream)
    from study.metricnames import metric_label
    from study.truncation import describe

    named = {}
    for c in cuts:
        task = c["truncation"].split("/")[0]
        if "labels" in c and task not in named:
            named[task] = metric_label(c["metric"], c["labels"])
            print(f"{protocol.source}: task {task}: primary metric {named[task]}; labels {c['labels']}", file=stream)
    for c in cuts:
        what = (f"not measured ({c['error']})" if "error" in c else
                f"train {describe(c.get('train'))}; eval {describe(c.get('eval'))}")
        print(f"{protocol.source}: max_length {protocol.training.max_length} cuts, {c['truncation']}: {what}",
              file=stream)


if __name__ == "__main__":
    sys.exit(child(sys.argv[1]))
