"""Our training loop against Hugging Face ``transformers.Trainer`` on the same cell.

    .venv/bin/python bench/vs_trainer.py                      # demo cell, k = 8 seeds, CPU, 1 thread
    .venv/bin/python bench/vs_trainer.py -k 10 --protocol protocols/demo.yaml --threads 2

Both train the same thing for each seed: the same examples (our task loader), the same backbone
with the same classifier-head initialisation (our ``load_model`` with the seed's init stream),
the same tokenisation (our ``encode``, dynamic padding), epochs, learning rate, batch size,
maximum length, linear warm-up and decay, gradient clipping, weight decay (not on biases and
LayerNorm weights, in both) and an evaluation every epoch. What differs: the data order and
dropout draws (each framework seeds its own), and the loop itself. Runs alternate ours/Trainer
with the order flipped every pair, so drift on a shared machine hits both. Timed: the whole run,
from the spec to the final metrics (task and model loading included, in both).

Prints per pair the two times and their ratio, the median ratio, both metrics' mean ± sd, and
Welch's t-test and the Mann–Whitney U test of the two metric distributions (needs scipy).
Needs the ``bench`` extra (``pip install 'maskstudy[bench]'``: accelerate, which Trainer needs).
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, bench/ is sys.path[0] and bench/analysis.py would shadow the analysis package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def ours(spec) -> tuple[float, float]:
    from study.train import run_one

    t0 = time.perf_counter()
    result = run_one(spec)
    return time.perf_counter() - t0, result.final_metrics[result.primary_metric]


def trainer(spec, optim: str = "adamw_torch_fused") -> tuple[float, float]:
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from analysis.metrics import compute_metrics
    from study.models import load_model
    from study.protocol import TaskConfig
    from study.seeding import seed_streams
    from study.tasks import load_task
    from study.tasktypes.classification import encode

    t0 = time.perf_counter()
    training, streams = spec.training, seed_streams(spec.seed)
    task = load_task(TaskConfig(**spec.task))
    loaded = load_model(spec.model, task.num_labels, streams.init)
    tokenizer = loaded.tokenizer

    def rows(examples):
        return [{k: v for k, v in item.items() if not k.startswith("_") and k != "label"} | {"labels": item["label"]}
                for item in encode(tokenizer, examples, training["max_length"])]

    train, evaluation = rows(task.train), rows(task.eval)
    steps = math.ceil(len(train) / training["batch_size"]) * training["epochs"]
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, num_train_epochs=training["epochs"], per_device_train_batch_size=training["batch_size"],
            per_device_eval_batch_size=training.get("eval_batch_size", 128), learning_rate=training["learning_rate"],
            warmup_steps=int(math.ceil(training["warmup_ratio"] * steps)), lr_scheduler_type="linear",
            weight_decay=training["weight_decay"], max_grad_norm=training.get("max_grad_norm") or 0.0,
            eval_strategy="epoch", save_strategy="no", logging_strategy="no", report_to=[], seed=spec.seed,
            use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0, disable_tqdm=True, optim=optim,
            bf16=training.get("precision") == "bf16", fp16=training.get("precision") == "fp16")
        run = Trainer(model=loaded.model, args=args, train_dataset=train, eval_dataset=evaluation,
                      data_collator=DataCollatorWithPadding(tokenizer))
        run.train()
        logits = run.predict(evaluation).predictions
    labels = np.array([e.label for e in task.eval])
    metrics = compute_metrics(labels, np.asarray(logits).argmax(-1), task.primary_metric, task.num_labels)
    return time.perf_counter() - t0, metrics[task.primary_metric]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--protocol", default=str(ROOT / "protocols" / "demo.yaml"))
    ap.add_argument("--masker", default="none", help="our masker for the cell (Trainer never masks)")
    ap.add_argument("-k", type=int, default=8, help="seeds (runs per framework)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--optimizer", choices=("adamw", "adamw-fused"),
                    help="our training.optimizer (default: the protocol's): adamw is the for-loop AdamW on the "
                         "CPU, adamw-fused the fused kernel Trainer's default uses")
    ap.add_argument("--trainer-optim", default="adamw_torch_fused",
                    help="Trainer's optimizer: its default adamw_torch_fused, or adamw_torch (the for-loop "
                         "AdamW, like our default training.optimizer: adamw on the CPU)")
    ap.add_argument("--precision", choices=("fp32", "bf16", "fp16"),
                    help="training.precision for both (default: the protocol's); Trainer gets bf16=/fp16=")
    args = ap.parse_args(argv)

    from transformers.utils import logging as hf_logging

    from study.protocol import load_protocol
    from study.spec import expand

    hf_logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    p = load_protocol(args.protocol)
    cell = next(s for s in expand(p) if s.masker["name"] == args.masker)
    execution = {**cell.execution, "threads_per_run": args.threads}
    training = {**cell.training, **({"optimizer": args.optimizer} if args.optimizer else {}),
                **({"precision": args.precision} if args.precision else {})}
    specs = [type(cell)(**{**cell.__dict__, "seed": seed, "execution": execution, "training": training})
             for seed in range(args.k)]
    t = specs[0].training
    print(f"cell: {cell.task['name']} ({cell.task.get('max_train_examples')} train / "
          f"{cell.task.get('max_eval_examples')} eval) × {cell.model['name']} × {cell.masker['name']}; "
          f"{t['epochs']} epochs, batch {t['batch_size']}, lr {t['learning_rate']}, max length {t['max_length']}, "
          f"warm-up {t['warmup_ratio']}, clip {t.get('max_grad_norm', 1.0)}, wd {t['weight_decay']}, "
          f"precision {t.get('precision', 'fp32')}")
    print(f"our optimizer: {t.get('optimizer', 'adamw')}")
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({platform.processor() or 'cpu'})"
    print(f"device: {device}, {args.threads} thread(s), k = {args.k}, torch {torch.__version__}")
    def theirs(spec):
        return trainer(spec, args.trainer_optim)

    print(f"Trainer optimizer: {args.trainer_optim}; warming up (imports, data, model files) untimed ...", flush=True)
    ours(specs[0])
    theirs(specs[0])
    print(f"{'seed':>4} {'ours s':>8} {'Trainer s':>9} {'ratio':>6} {'ours':>7} {'Trainer':>7}")
    rows = []
    for spec in specs:
        first, second = (ours, theirs) if spec.seed % 2 == 0 else (theirs, ours)
        a, b = first(spec), second(spec)
        (to, mo), (tt, mt) = (a, b) if first is ours else (b, a)
        rows.append((to, tt, mo, mt))
        print(f"{spec.seed:>4} {to:8.2f} {tt:9.2f} {to / tt:6.3f} {mo:7.4f} {mt:7.4f}", flush=True)
    ratios = [r[0] / r[1] for r in rows]
    m_ours, m_tr = [r[2] for r in rows], [r[3] for r in rows]
    print(f"time ours / Trainer: median {statistics.median(ratios):.3f} (min {min(ratios):.3f}, "
          f"max {max(ratios):.3f}); total {sum(r[0] for r in rows):.1f} s vs {sum(r[1] for r in rows):.1f} s")
    print(f"primary metric: ours {statistics.mean(m_ours):.4f} ± {statistics.stdev(m_ours):.4f}, "
          f"Trainer {statistics.mean(m_tr):.4f} ± {statistics.stdev(m_tr):.4f} (mean ± sd over {args.k} seeds)")
    from scipy import stats

    welch = stats.ttest_ind(m_ours, m_tr, equal_var=False)
    mwu = stats.mannwhitneyu(m_ours, m_tr, alternative="two-sided")
    print(f"two-sample tests of the metric distributions: Welch t = {welch.statistic:.3f}, p = {welch.pvalue:.3f}; "
          f"Mann–Whitney U = {mwu.statistic:.1f}, p = {mwu.pvalue:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
