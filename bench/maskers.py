"""Masker overhead: training-step time of every masker relative to `none`, in one process.

    .venv/bin/python bench/maskers.py                    # CPU: 2-layer MiniLM, batch 32 × 64 tokens
    .venv/bin/python bench/maskers.py --layers 6 --batch-size 32 --max-length 128   # e.g. on a GPU

Every masker trains the same model on the same batches (real tweets from the offline task).
A training step is what train.py does: ``apply`` → forward → loss → backward →
``after_backward`` → AdamW step. Each round runs, for every one of ``--batches`` batches, all
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
import torch.nn.functional as F

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


def build(args, device):
    from transformers.utils import logging

    from study.maskers.base import MaskerContext
    from study.models import load_model
    from study.protocol import TaskConfig
    from study.tasks import load_task
    from study.train import collate, encode

    logging.set_verbosity_error()
    task = load_task(TaskConfig(name="tweets", dataset="tweets-sentiment",
                                max_train_examples=args.batch_size * args.batches, max_eval_examples=2))
    loaded = load_model({"source": args.model, "num_hidden_layers": args.layers}, task.num_labels, 0)
    model, tokenizer = loaded.model.to(device), loaded.tokenizer
    items = encode(tokenizer, task.train, args.max_length)
    batches = [collate(items[i:i + args.batch_size], tokenizer.pad_token_id, device)
               for i in range(0, len(items), args.batch_size)]
    context = MaskerContext(
        replacement_id=loaded.replacement_id, replacement=loaded.replacement, pad_token_id=tokenizer.pad_token_id,
        special_ids=torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long),
        num_layers=loaded.num_layers, num_heads=loaded.num_heads, is_decoder=loaded.is_decoder, device=device)
    return model, tokenizer, items, batches, context


def make(kind, params, context, device):
    from study.registry import masker_class

    cls = masker_class(kind)
    return cls(cls.Params(**params), torch.Generator(device=device).manual_seed(0), context)


def time_step(masker, model, optimizer, batch, step, device, clock) -> float:
    """Seconds for one training step in train.py's order of calls."""
    from study.train import model_inputs

    model.train()
    sync(device)
    t0 = clock()
    batch = masker.apply(batch, step)
    logits = model(**model_inputs(batch)).logits
    F.cross_entropy(logits, batch["labels"]).backward()
    masker.after_backward(step)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    sync(device)
    return clock() - t0


def bench_steps(args, device, model, tokenizer, items, batches, context) -> dict:
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    labels = list(MASKERS)
    n = len(batches)
    maskers = {}
    for label, (kind, params) in MASKERS.items():
        maskers[label] = make(kind, params, context, device)
        maskers[label].setup(model, tokenizer, items, (args.rounds + 1) * n)
    times = {k: [[] for _ in range(n)] for k in labels}  # per masker, per batch: one time per round
    for r in range(args.rounds + 1):  # round 0 warms every path up and is not counted
        for b, batch in enumerate(batches):
            shift = (r * n + b) % len(labels)
            for label in labels[shift:] + labels[:shift]:  # the maskers back to back on one batch
                masker = maskers[label]
                masker.attach(model)
                try:
                    seconds = time_step(masker, model, optimizer, batch, r * n + b, device, clock)
                finally:
                    masker.detach()
                if r:
                    times[label][b].append(seconds)
    # Per batch the fastest round (interference only ever adds time), masker / none on the same
    # batch, median over batches.
    best = {k: [min(ts) for ts in times[k]] for k in labels}
    ratios = {k: statistics.median(a / b for a, b in zip(best[k], best["none"], strict=True)) for k in labels}
    overhead = {k: 1000 * statistics.median(a - b for a, b in zip(best[k], best["none"], strict=True)) for k in labels}
    return {"step_ms_none": 1000 * statistics.median(best["none"]), "ratios": ratios, "overhead_ms": overhead,
            "realised_rates": {k: maskers[k].realised_rate for k in labels}}


def bench_syncs(args, device, model, tokenizer, items, batches, context) -> dict:
    """Host reads of device values per training step, per masker (study.syncs): on CUDA each one
    waits for the device. The forward and backward of ``none`` set the floor."""
    from study.syncs import count_host_reads

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    per_step, where = {}, {}
    for label, (kind, params) in MASKERS.items():
        masker = make(kind, params, context, device)
        masker.setup(model, tokenizer, items, 2 * len(batches))
        masker.attach(model)
        try:
            time_step(masker, model, optimizer, batches[0], 0, device, time.perf_counter)  # warm-up
            with count_host_reads(device) as reads:
                for b, batch in enumerate(batches):
                    time_step(masker, model, optimizer, batch, b + 1, device, time.perf_counter)
        finally:
            masker.detach()
        per_step[label] = reads.count / len(batches)
        where[label] = sorted(set(reads.calls))[:6]
    return {"per_step": per_step, "extra_per_step": {k: v - per_step["none"] for k, v in per_step.items()},
            "where": where}


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
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--clock", choices=["auto", "cpu", "wall"], default="auto",
                   help="cpu: process CPU time (robust on a shared box; auto on CPU with 1 thread), wall: elapsed")
    p.add_argument("--json", default=None, help="also write the numbers to this file")
    p.add_argument("--count-syncs", action="store_true",
                   help="also count host reads of device values per step (CUDA: set_sync_debug_mode)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.clock == "auto":
        args.clock = "cpu" if device.type == "cpu" and torch.get_num_threads() == 1 else "wall"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    result = {"device": f"{device.type}: {name}", "torch": torch.__version__, "threads": torch.get_num_threads(),
              "config": {k: v for k, v in vars(args).items() if k != "json"}}
    model, tokenizer, items, batches, context = build(args, device)
    result["tlm_mask"] = bench_tlm_mask(args, device, context)
    result["steps"] = bench_steps(args, device, model, tokenizer, items, batches, context)

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
        result["syncs"] = bench_syncs(args, device, model, tokenizer, items, batches, context)
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
