"""Seq2seq costs: masker step-time ratios against `none`, and evaluation (generation) time per example.

    .venv/bin/python bench/seq2seq.py --threads 1       # CPU: the twin's settings (tlm-seq2seq-offline.yaml)
    .venv/bin/python bench/seq2seq.py --layers 6 --batch-size 32 --beams 4   # e.g. on a GPU

The defaults are protocols/tlm-seq2seq-offline.yaml's: the warm-started 2-layer MiniLM
encoder-decoder on E2E, batch 16, max length 64, fused AdamW, lower-cased BLEU, generation
batches of 32.

Every masker gets its own run, built by the real ``study.train.set_up`` from the same RunSpec but
for the masker (same seed: same weights, same batches), and is timed on the real
``study.train.train_step`` — mask, forward, loss, backward, clip, AdamW step — so nothing here is a
copy of the training loop. Each round runs every masker back to back on the same batch (rotated
order), so drift on a shared machine hits them alike; per masker and batch the best round counts
and the ratio is the median over batches of masker / `none` (a second `none` shows the noise
floor). With one CPU thread the clock is the process's CPU time, else wall time with CUDA
synchronised. Evaluation: the task type's evaluate (batched generation in inference mode, then
the metric statistics) over the eval examples, seconds per example, greedy and with ``--beams``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

# Run as a script, bench/ is sys.path[0] and bench/analysis.py would shadow the analysis package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MASKERS = {
    "none": {"kind": "none"},
    "none (again)": {"kind": "none"},
    "random-token": {"kind": "random-token", "rate": 0.15},
    "whole-word": {"kind": "whole-word", "rate": 0.15},
    "random-token both": {"kind": "random-token", "rate": 0.15, "side": "both"},
    "attention-dropout": {"kind": "attention-dropout", "rate": 0.1},
    "drophead": {"kind": "drophead", "rate": 0.1},
    "tlm": {"kind": "tlm", "rate": 0.1},
}
TARGETS = {"random-token": 1.03, "whole-word": 1.03, "random-token both": 1.03, "tlm": 1.15}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def spec_for(args, masker: dict):
    from study.protocol import parse_protocol
    from study.spec import expand

    protocol = {
        "name": "bench-seq2seq", "seeds": [0], "store": "runs/bench-seq2seq.sqlite",
        "tasks": [{"name": "e2e", "dataset": "e2e", "task_type": "seq2seq", "data_dir": str(args.data_dir),
                   "max_train_examples": args.train_mrs, "max_eval_examples": args.eval_mrs, "lowercase": True}],
        "models": [{"name": "m", "source": args.model, "decoder": args.decoder or args.model,
                    "num_hidden_layers": args.layers}],
        "maskers": [{"name": "m", **masker}],
        "training": {"epochs": 1, "batch_size": args.batch_size, "learning_rate": 1e-6,
                     "max_length": args.max_length, "eval_batch_size": args.eval_batch_size,
                     "optimizer": args.optimizer},
        "execution": {"threads_per_run": args.threads} if args.threads else {},
    }
    return expand(parse_protocol(protocol))[0]


def bench_steps(args, device) -> dict:
    from study.train import set_up, train_step

    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    labels = list(MASKERS)
    runs = {label: set_up(spec_for(args, m)) for label, m in MASKERS.items()}
    first = runs["none"]
    pad = first.loaded.tokenizer.pad_token_id
    batches = [first.task_type.collate(first.train_items[i * args.batch_size:(i + 1) * args.batch_size], pad, device)
               for i in range(args.batches)]
    for run in runs.values():
        run.masker.attach(run.model)
        run.model.train()
    times = {k: [[] for _ in batches] for k in labels}
    try:
        for r in range(args.rounds + 1):  # round 0 warms every path up and is not counted
            for b, batch in enumerate(batches):
                shift = (r * len(batches) + b) % len(labels)
                for label in labels[shift:] + labels[:shift]:
                    sync(device)
                    t0 = clock()
                    train_step(runs[label], {k: v.clone() for k, v in batch.items()}, r * len(batches) + b)
                    sync(device)
                    if r:
                        times[label][b].append(clock() - t0)
    finally:
        for run in runs.values():
            run.masker.detach()
    best = {k: [min(ts) for ts in times[k]] for k in labels}
    ratios = {k: statistics.median(a / n for a, n in zip(best[k], best["none"], strict=True)) for k in labels}
    return {"step_ms_none": 1000 * statistics.median(best["none"]), "ratios": ratios,
            "realised_rates": {k: runs[k].masker.realised_rate for k in labels}}


def bench_eval(args, device) -> dict:
    from study.train import evaluate, set_up

    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    run = set_up(spec_for(args, {"kind": "none"}))
    out = {}
    for beams in sorted({1, args.beams}):
        run.spec.task["generation"] = {"num_beams": beams}
        evaluate(run, [it for it in run.eval_items if it["_example"] == 0], run.task.eval[:1])  # warm-up
        sync(device)
        t0 = clock()
        evaluation = evaluate(run, run.eval_items, run.task.eval)
        sync(device)
        seconds = clock() - t0
        tokens = run.loaded.tokenizer([g[1] for g in evaluation.generations])["input_ids"]
        out[f"beams={beams}"] = {"s_per_example": seconds / len(run.task.eval), "examples": len(run.task.eval),
                                 "bleu": evaluation.metrics[run.task.primary_metric],
                                 "mean_tokens": sum(len(t) - 2 for t in tokens) / len(tokens)}
    out["kv_cache"] = kv_cache_speedup(run, device, clock)
    return out


def kv_cache_speedup(run, device, clock) -> dict:
    """Greedy generation of the first eval batch with and without the decoder's KV cache (the
    default, ``use_cache=True``, is what evaluation runs): the time without / the time with, and
    whether both generate the same tokens."""
    from study.tasktypes.classification import PAD_VALUES, pad_rows, to_device

    firsts = [it for it in run.eval_items if it["_ref"] == 0][:run.training["eval_batch_size"]]
    pad = run.loaded.tokenizer.pad_token_id
    batch = to_device({k: pad_rows(firsts, k, pad if v is None else v) for k, v in PAD_VALUES.items()
                       if k in ("input_ids", "attention_mask")}, device)
    run.model.eval()
    seconds, outputs = {}, {}
    with torch.inference_mode():
        for cache in (True, False):
            sync(device)
            t0 = clock()
            outputs[cache] = run.model.generate(**batch, do_sample=False, max_new_tokens=32, use_cache=cache)
            sync(device)
            seconds[cache] = clock() - t0
    return {"examples": len(firsts), "max_new_tokens": 32, "without_over_with": seconds[False] / seconds[True],
            "same_tokens": bool(torch.equal(outputs[True], outputs[False]))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="builtin:minilm-l6")
    p.add_argument("--decoder", default=None, help="default: the same checkpoint as --model")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "e2e"))
    p.add_argument("--train-mrs", type=int, default=40)
    p.add_argument("--eval-mrs", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--eval-batch-size", type=int, default=32)
    p.add_argument("--optimizer", choices=["adamw", "adamw-fused"], default="adamw-fused")
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--batches", type=int, default=4)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--beams", type=int, default=4)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--clock", choices=["auto", "cpu", "wall"], default="auto")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    from transformers.utils import logging

    logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.clock == "auto":
        args.clock = "cpu" if device.type == "cpu" and torch.get_num_threads() == 1 else "wall"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    result = {"device": f"{device.type}: {name}", "torch": torch.__version__, "threads": torch.get_num_threads(),
              "config": {k: v for k, v in vars(args).items() if k != "json"}}
    result["steps"] = bench_steps(args, device)
    s = result["steps"]  # printed before the evaluation is timed
    print(f"device {result['device']}  torch {result['torch']}  threads {result['threads']}")
    print(f"{args.model} enc-dec layers={args.layers} batch={args.batch_size} (E2E pairs, max_length "
          f"{args.max_length})  none: {s['step_ms_none']:.1f} ms/step ({args.clock} clock; best of {args.rounds} "
          f"rounds per batch, median over {args.batches} batches)")
    print(f"{'masker':<20}{'ratio':>8}{'target':>8}  ok  realised rate")
    for label, ratio in s["ratios"].items():
        target = TARGETS.get(label)
        ok = "" if target is None else ("yes" if ratio <= target else "NO")
        rate = s["realised_rates"][label]
        print(f"{label:<20}{ratio:>8.3f}{'' if target is None else f'{target:.2f}':>8}  {ok:<4}"
              f"{'' if rate is None else f'{rate:.3f}'}", flush=True)
    result["eval"] = bench_eval(args, device)
    kv = result["eval"].pop("kv_cache")
    for setting, e in result["eval"].items():
        print(f"evaluation {setting}: {1000 * e['s_per_example']:.1f} ms per example over {e['examples']} examples, "
              f"{e['mean_tokens']:.1f} tokens each (generation + metric statistics; lower-cased BLEU "
              f"{100 * e['bleu']:.2f} of the model before fine-tuning)")
    print(f"KV cache: greedy generation of {kv['examples']} examples ({kv['max_new_tokens']} new tokens) takes "
          f"{kv['without_over_with']:.2f}x as long without it (same tokens: {kv['same_tokens']})")
    result["eval"]["kv_cache"] = kv
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
