"""Masker overhead: training-step time of every masker relative to `none`, in one process.

    .venv/bin/python bench/maskers.py                    # CPU: 2-layer MiniLM, batch 32 × 64 tokens
    .venv/bin/python bench/maskers.py --layers 6 --batch-size 32 --max-length 128   # e.g. on a GPU

Every masker gets its own run, built by the real ``study.train.set_up`` from the same RunSpec but
for the masker (same seed: the same weights and batches; real tweets from the offline task), and
is timed on the real ``study.train.train_step``: ``apply`` → forward → loss → backward →
``after_backward`` → clip → AdamW step → scheduler — the training loop's own code, not a copy. Each round runs, for every one of ``--batches`` batches, all
maskers back to back on that batch (in a rotated order), so drift on a shared machine hits them
alike. Per masker and batch the best round counts (interference only adds time); the ratio is
the median over batches of masker / `none`. A second `none` shows the noise floor. On a CPU with one thread the
clock is the process's CPU time (``--clock cpu``), which other tenants of a shared machine
barely disturb; elsewhere it is wall time, with CUDA synchronised around every step.
Also measured: TLM mask construction (draws + vectorised mask) against the reference code's
per-row loop, on the same shapes. Prints a table with the targets of issue 3 and the device.
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

# label → (kind, params); "none (again)" is a second baseline: the noise floor of the ratios.
MASKERS = {
    "none": ("none", {}),
    "none (again)": ("none", {}),
    "random-token": ("random-token", {"rate": 0.15}),
    "whole-word": ("whole-word", {"rate": 0.15}),
    "typhoon": ("typhoon", {"rate": 0.15}),
    "attention-dropout": ("attention-dropout", {"rate": 0.1}),
    "drophead": ("drophead", {"rate": 0.1}),
    "tlm": ("tlm", {"rate": 0.1}),
}
TARGETS = {"random-token": 1.03, "whole-word": 1.03, "typhoon": 1.05, "drophead": 1.05, "tlm": 1.15}
TLM_SPEEDUP_TARGET = 50.0


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def spec_for(args, masker: dict):
    """The RunSpec of one masker's run: tweets, the backbone cut to --layers, lr 1e-6 (timing only)."""
    from study.protocol import parse_protocol
    from study.spec import expand

    protocol = {
        "name": "bench-maskers", "seeds": [0], "store": "runs/bench-maskers.sqlite",
        "tasks": [{"name": "tweets", "dataset": "tweets-sentiment",
                   "max_train_examples": args.batch_size * args.batches, "max_eval_examples": 2}],
        "models": [{"name": "m", "source": args.model, "num_hidden_layers": args.layers}],
        "maskers": [{"name": "m", **masker}],
        "training": {"epochs": 1, "batch_size": args.batch_size, "learning_rate": 1e-6, "max_length": args.max_length},
    }
    return expand(parse_protocol(protocol))[0]


def build(args) -> dict:
    """label → its run (study.train.Run), every masker set up as a training run sets it up."""
    from transformers.utils import logging

    from study.train import set_up

    logging.set_verbosity_error()
    return {label: set_up(spec_for(args, {"kind": kind, **params})) for label, (kind, params) in MASKERS.items()}


def make(kind, params, context, device):
    from study.registry import masker_class

    cls = masker_class(kind)
    return cls(cls.Params(**params), torch.Generator(device=device).manual_seed(0), context)


def bench_steps(args, device, runs: dict) -> dict:
    from study.train import train_step

    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    labels = list(MASKERS)
    first = runs["none"]
    pad = first.loaded.tokenizer.pad_token_id
    batches = [first.task_type.collate(first.train_items[i:i + args.batch_size], pad, device)
               for i in range(0, len(first.train_items), args.batch_size)]
    n = len(batches)
    for run in runs.values():
        run.masker.attach(run.model)
        run.model.train()
    times = {k: [[] for _ in range(n)] for k in labels}  # per masker, per batch: one time per round
    try:
        for r in range(args.rounds + 1):  # round 0 warms every path up and is not counted
            for b, batch in enumerate(batches):
                shift = (r * n + b) % len(labels)
                for label in labels[shift:] + labels[:shift]:  # the maskers back to back on one batch
                    sync(device)
                    t0 = clock()
                    train_step(runs[label], _copy(batch), r * n + b)
                    sync(device)
                    if r:
                        times[label][b].append(clock() - t0)
    finally:
        for run in runs.values():
            run.masker.detach()
    # Per batch the fastest round (interference only ever adds time), masker / none on the same
    # batch, median over batches.
    best = {k: [min(ts) for ts in times[k]] for k in labels}
    ratios = {k: statistics.median(a / b for a, b in zip(best[k], best["none"], strict=True)) for k in labels}
    overhead = {k: 1000 * statistics.median(a - b for a, b in zip(best[k], best["none"], strict=True)) for k in labels}
    return {"step_ms_none": 1000 * statistics.median(best["none"]), "ratios": ratios, "overhead_ms": overhead,
            "realised_rates": {k: runs[k].masker.realised_rate for k in labels}}


def bench_syncs(args, device, runs: dict) -> dict:
    """Host reads of device values per training step, per masker (study.syncs): on CUDA each one
    waits for the device. The forward and backward of ``none`` set the floor."""
    from study.syncs import count_host_reads
    from study.train import train_step

    first = runs["none"]
    pad = first.loaded.tokenizer.pad_token_id
    batches = [first.task_type.collate(first.train_items[i:i + args.batch_size], pad, device)
               for i in range(0, len(first.train_items), args.batch_size)]
    per_step, where = {}, {}
    for label, run in runs.items():
        run.masker.attach(run.model)
        run.model.train()
        try:
            train_step(run, _copy(batches[0]), 0)  # warm-up
            with count_host_reads(device) as reads:
                for b, batch in enumerate(batches):
                    train_step(run, _copy(batch), b + 1)
                sync(device)
        finally:
            run.masker.detach()
        per_step[label] = reads.count / len(batches)
        where[label] = sorted(set(reads.calls))[:6]
    return {"per_step": per_step, "extra_per_step": {k: v - per_step["none"] for k, v in per_step.items()},
            "where": where}


def _copy(batch: dict) -> dict:
    """A batch a masker may write into, leaving the shared one as it was (host values as they are)."""
    return {k: v.clone() if torch.is_tensor(v) else v for k, v in batch.items()}


def bench_tlm_mask(args, device, context) -> dict:
    """TLM mask construction for one layer (draws included) vs the reference code's per-row loop."""
    from study.maskers.tlm import tlm_allowed_rowwise

    b, t = args.batch_size, args.max_length
    masker = make("tlm", {"rate": 0.1}, context, device)
    real = torch.ones((b, t), dtype=torch.bool, device=device)
    real[: b // 2, t // 2:] = False  # half the batch padded to half length
    min_value = torch.finfo(torch.float32).min

    def vectorised():
        return masker.build(real, False, None, torch.float32)

    def rowwise():
        d, siblings = masker.draw(real)
        allowed = tlm_allowed_rowwise(d, siblings)
        return (1.0 - allowed[:, None].float()) * min_value  # the reference's additive form

    def clock(fn, reps):
        fn()
        sync(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        sync(device)
        return (time.perf_counter() - t0) / reps

    fast = min(clock(vectorised, 50) for _ in range(5))
    slow = min(clock(rowwise, 2) for _ in range(3))
    return {"shape": [b, t], "vectorised_ms": 1000 * fast, "rowwise_ms": 1000 * slow, "speedup": slow / fast}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="builtin:minilm-l6")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--batches", type=int, default=4, help="distinct batches: each round runs each once")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--clock", choices=["auto", "cpu", "wall"], default="auto",
                   help="cpu: process CPU time (robust on a shared box; auto on CPU with 1 thread), wall: elapsed")
    p.add_argument("--json", default=None, help="also write the numbers to this file")
    p.add_argument("--count-syncs", action="store_true",
                   help="also count host reads of device values per step (CUDA: set_sync_debug_mode)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from study.device import pick_device

    device = pick_device()  # what set_up trains on: the GPU when there is one
    if args.clock == "auto":
        args.clock = "cpu" if device.type == "cpu" and torch.get_num_threads() == 1 else "wall"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    result = {"device": f"{device.type}: {name}", "torch": torch.__version__, "threads": torch.get_num_threads(),
              "config": {k: v for k, v in vars(args).items() if k != "json"}}
    runs = build(args)
    result["tlm_mask"] = bench_tlm_mask(args, device, runs["none"].masker.context)
    result["steps"] = bench_steps(args, device, runs)

    s = result["steps"]
    print(f"device {result['device']}  torch {result['torch']}  threads {result['threads']}")
    print(f"model {args.model} layers={args.layers} batch={args.batch_size}x{args.max_length}  "
          f"none: {s['step_ms_none']:.1f} ms/step ({args.clock} clock; best of {args.rounds} rounds per batch, "
          f"median over {args.batches} batches)")
    print(f"{'masker':<20}{'ratio':>8}{'target':>8}  ok  {'+ms/step':>9}  realised rate")
    for kind, ratio in s["ratios"].items():
        target = TARGETS.get(kind)
        ok = "" if target is None else ("yes" if ratio <= target else "NO")
        rate = s["realised_rates"][kind]
        print(f"{kind:<20}{ratio:>8.3f}{'' if target is None else f'{target:.2f}':>8}  {ok:<4}"
              f"{s['overhead_ms'][kind]:>9.2f}  {'' if rate is None else f'{rate:.3f}'}")
    m = result["tlm_mask"]
    print(f"TLM mask {m['shape'][0]}x{m['shape'][1]}: vectorised {m['vectorised_ms']:.3f} ms, per-row loop "
          f"{m['rowwise_ms']:.1f} ms, speedup {m['speedup']:.0f}x (target >= {TLM_SPEEDUP_TARGET:.0f}x)")
    if args.count_syncs:
        result["syncs"] = bench_syncs(args, device, runs)
        print("host reads of device values per step (on CUDA each waits for the device), masker - none:")
        print("  " + ", ".join(f"{k} {v:+.1f}" for k, v in result["syncs"]["extra_per_step"].items()
                               if not k.startswith("none")) + f"   (none: {result['syncs']['per_step']['none']:.1f})")
        for label, places in result["syncs"]["where"].items():
            print(f"  {label}: {', '.join(places) or '-'}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
