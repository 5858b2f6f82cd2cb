"""GPU checks and benchmark (needs a CUDA GPU; says so and exits 0 without one).

    .venv/bin/python bench/gpu.py                       # everything below
    .venv/bin/python bench/gpu.py --skip-packing --steps 50

1. Precision: step time and training examples/s, fp32 vs bf16 (autocast as train.py uses it,
   TF32 on, fused AdamW), on MiniLM-L6 (pretrained, built in) and on a 12-layer BERT-base-sized
   model built from ``BertConfig()`` (random weights: timing only).
2. Maskers: every masker's step-time ratio vs ``none`` on the GPU (``bench/maskers.py``'s
   measurement, MiniLM-L6, batch 32 × 128).
3. Packing: throughput of k = 1, 2, 4 runs per GPU in the local pool (forked workers), for a
   small backbone (the demo cell: 2-layer MiniLM), from ``study run`` wall time over 4·k runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _maskers_bench():
    spec = importlib.util.spec_from_file_location("bench_maskers", ROOT / "bench" / "maskers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def backbone(name: str, device):
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from study.models import load_model, resolve_source

    if name == "bert-base-config":
        tokenizer = AutoTokenizer.from_pretrained(resolve_source("builtin:minilm-l6"))
        model = BertForSequenceClassification(BertConfig(vocab_size=tokenizer.vocab_size, num_labels=3))
        return model.to(device), tokenizer
    loaded = load_model({"source": "builtin:minilm-l6"}, 3, 0)
    return loaded.model.to(device), loaded.tokenizer


def step_times(model, tokenizer, precision_name: str, args, device) -> tuple[float, float]:
    """Median ms per training step and examples/s, after a warm-up."""
    from study.precision import Precision, configure_tf32
    from study.tasktypes.classification import collate, model_inputs
    from study.train import build_optimizer

    configure_tf32(True, device)
    precision = Precision(precision_name, device)
    g = torch.Generator().manual_seed(0)
    items = [{"input_ids": [tokenizer.cls_token_id] + torch.randint(1000, 20000, (args.max_length - 2,),
                                                                    generator=g).tolist() + [tokenizer.sep_token_id],
              "attention_mask": [1] * args.max_length, "label": i % 3} for i in range(args.batch_size)]
    training = {"learning_rate": 1e-5, "weight_decay": 0.01, "warmup_ratio": 0.0}
    optimizer, _ = build_optimizer(model, training, 10_000, device)
    batch = collate(items, tokenizer.pad_token_id, device)
    times = []
    model.train()
    for i in range(args.warmup + args.steps):
        torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        with precision.autocast():
            loss = F.cross_entropy(model(**model_inputs(batch)).logits.float(), batch["labels"])
        precision.backward(loss)
        precision.unscale(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        precision.step(optimizer)
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize(device)
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    ms = 1000 * statistics.median(times)
    return ms, args.batch_size / (ms / 1000)


def packing_command(protocol: Path) -> list[str]:
    """``study run`` on GPU 0 alone. ``--gpus`` takes a count or a list: "1" is one GPU (index 0),
    while "0" means no GPU at all (the runs would be serial CPU runs)."""
    return [sys.executable, "-m", "study.cli", "run", str(protocol), "--gpus", "1"]


def packing(k: int, args) -> float:
    """Runs per minute with k runs packed on GPU 0 (``--packing-runs``·k runs of the demo cell, masker none)."""
    import yaml

    with tempfile.TemporaryDirectory() as tmp:
        demo = yaml.safe_load((ROOT / "protocols" / "demo.yaml").read_text())
        demo.update(seeds=list(range(args.packing_runs * k)), store=str(Path(tmp) / "p.sqlite"),
                    maskers=[{"name": "none", "kind": "none"}], analysis={"baseline": "none"},
                    execution={"runs_per_gpu": k, "worker_start": "forkserver", "threads_per_run": 1})
        path = Path(tmp) / "p.yaml"
        path.write_text(yaml.safe_dump(demo))
        t0 = time.perf_counter()
        out = subprocess.run(packing_command(path), capture_output=True, text=True, cwd=ROOT)
        seconds = time.perf_counter() - t0
        if out.returncode != 0:
            raise RuntimeError(out.stderr[-2000:])
    if "fresh interpreter" in out.stdout + out.stderr:
        print(f"  k = {k}: the fork server was not used: "
              f"{next(line for line in (out.stdout + out.stderr).splitlines() if 'fresh interpreter' in line)}")
    return args.packing_runs * k / seconds * 60


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--skip-maskers", action="store_true")
    ap.add_argument("--skip-packing", action="store_true")
    ap.add_argument("--skip-precision", action="store_true")
    ap.add_argument("--packing-runs", type=int, default=4, help="runs per slot in each packing measurement")
    ap.add_argument("--count-syncs", action="store_true", help="maskers: also count host syncs per step")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench/gpu.py: no CUDA GPU visible; nothing measured (run it on a machine with one)")
        return 0
    from transformers.utils import logging

    logging.set_verbosity_error()
    device = torch.device("cuda")
    print(f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}, "
          f"batch {args.batch_size} × {args.max_length} tokens, median of {args.steps} steps")
    print(f"{'model':<20}{'precision':>10}{'ms/step':>10}{'examples/s':>12}{'speed-up':>10}")
    for name in () if args.skip_precision else ("minilm-l6", "bert-base-config"):
        base = None
        for precision in ("fp32", "bf16"):
            model, tokenizer = backbone(name, device)
            ms, eps = step_times(model, tokenizer, precision, args, device)
            base = base or ms
            print(f"{name:<20}{precision:>10}{ms:>10.2f}{eps:>12.0f}{base / ms:>10.2f}", flush=True)
            del model
            torch.cuda.empty_cache()
    if not args.skip_maskers:
        print("\nmaskers on the GPU (bench/maskers.py, MiniLM-L6, batch 32 × 128):", flush=True)
        _maskers_bench().main(["--layers", "6", "--batch-size", "32", "--max-length", "128",
                               *(["--count-syncs"] if args.count_syncs else [])])
    if not args.skip_packing:
        print("\nlocal pool, runs packed per GPU (demo cell, 2-layer MiniLM, forked workers):")
        base = None
        for k in (1, 2, 4):
            rate = packing(k, args)
            base = base or rate
            print(f"k = {k}: {rate:.1f} runs/min ({rate / base:.2f}× k = 1)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
