"""Why Typhoon's realised masking rate sits above its budget: a simulation with the masker's own
functions on a real tokenised corpus.

Hypothesis ("first sightings at ŝ = 1"): a type not seen yet has ŝ = 1, the highest propensity.
In the first epoch such a type has all its occurrences still ahead, so it is over-represented in
the coming batches relative to the whole-training-set counts n_v that the calibration weighs by,
and the realised rate exceeds the budget; from the second epoch on every type is seen and the
excess should vanish.

Each simulated run follows TyphoonMasker step for step — eligible positions, q from
``propensity`` + ``calibrate`` over the training-set counts, Bernoulli draws, ``batch_estimates``
and ``ema_update`` (or ``ema_update_reference``) — with the model's saliency replaced by a
synthetic one (per type a latent μ_v ~ N(0, 1), per occurrence s = μ_v + N(0, 1)): the rate
question is about which types are seen when, not about what the gradient says. Variants:

- ``project``: the masker as it runs by default;
- ``all-seen``: the counterfactual with no unseen type (every training type starts seen, w = μ_v);
- ``all-seen-drawfree``: that counterfactual with the update made independent of the mask draw
  (new = mean of s over the batch's occurrences, masked or not), to test the second mechanism:
  an update that depends on the draw (unmasked occurrences push w towards −s, masked ones towards
  +s) moves the q of the types a batch holds, which — the epoch being drawn without
  replacement — are then under-represented in the batches left;
- ``reference``: ``reference: true`` (budget over every token incl. [CLS]/[SEP], EMA from zero).

Prints, per task and variant, the mean realised rate over seeds with its standard error and the
z against the budget, overall and per epoch.

Run: ``.venv/bin/python bench/typhoon_rate.py [--seeds 20] [--data ../shared/data/glue]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# bench/analysis.py would shadow the analysis package that study.train imports
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from study.maskers.base import eligible_positions  # noqa: E402
from study.maskers.typhoon import (  # noqa: E402
    batch_estimates,
    calibrate,
    ema_update,
    ema_update_reference,
    propensity,
)


def simulate(items, special_ids, vocab: int, *, rate: float, ema: float, spread: float, batch_size: int,
             epochs: int, seed: int, variant: str) -> list[tuple[int, int]]:
    """(masked, eligible) per epoch of one simulated run."""
    from study.tasktypes.classification import collate

    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    mu = torch.randn(vocab, generator=gen, dtype=torch.float64)
    ids = torch.tensor([t for it in items for t in it["input_ids"]])
    ok = torch.ones_like(ids, dtype=torch.bool) if variant == "reference" else \
        eligible_positions(ids, torch.ones_like(ids), special_ids)
    counts = torch.bincount(ids[ok], minlength=vocab).double()
    support = torch.nonzero(counts > 0).squeeze(1)
    w = torch.zeros(vocab, dtype=torch.float64)
    seen = torch.zeros(vocab, dtype=torch.bool)
    if variant.startswith("all-seen"):
        w[support], seen[support] = mu[support], True
    updates, out = 0, []
    for _ in range(epochs):
        order = rng.permutation(len(items))
        masked_n = eligible_n = 0
        for start in range(0, len(items), batch_size):
            batch = collate([items[i] for i in order[start:start + batch_size]], 0, torch.device("cpu"))
            b_ids, attn = batch["input_ids"], batch["attention_mask"]
            q = torch.zeros(vocab, dtype=torch.float64)
            q[support], _ = calibrate(counts[support], propensity(w[support], seen[support], spread), rate)
            eligible = eligible_positions(b_ids, attn, special_ids)
            chosen = eligible & (torch.rand(b_ids.shape, generator=gen, dtype=torch.float64) < q[b_ids])
            masked_n += int(chosen.sum())
            eligible_n += int(eligible.sum())
            s = mu[b_ids] + torch.randn(b_ids.shape, generator=gen, dtype=torch.float64)
            if variant == "all-seen-drawfree":  # −(−s) over every occurrence: the draw plays no part
                new, seen_batch = batch_estimates(-s, b_ids, eligible, torch.zeros_like(chosen), vocab)
            else:
                new, seen_batch = batch_estimates(s, b_ids, eligible, chosen, vocab)
            if variant == "reference":
                w, seen = ema_update_reference(w, seen, new, seen_batch, ema, first_step=updates == 0)
            else:
                w, seen = ema_update(w, seen, new, seen_batch, ema)
            updates += 1
        out.append((masked_n, eligible_n))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "glue"))
    ap.add_argument("--rate", type=float, default=0.15)
    args = ap.parse_args()
    torch.set_num_threads(1)

    from transformers import AutoTokenizer

    from study.models import resolve_source
    from study.protocol import TaskConfig
    from study.tasks import load_task
    from study.tasktypes.classification import encode

    tokenizer = AutoTokenizer.from_pretrained(resolve_source("builtin:minilm-l6"))
    special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
    # The tasks and settings of the offline Typhoon twin that measured the 0.1527 (its MRPC/CoLA design,
    # before the twin moved to SST-2 and tweets: README "The offline Typhoon twin, run here").
    tasks = [("mrpc", TaskConfig("mrpc", "glue/mrpc", 300, 408, f"{args.data}/MRPC")),
             ("cola", TaskConfig("cola", "glue/cola", 500, 500, f"{args.data}/CoLA")),
             ("tweets", TaskConfig("tweets", "tweets-sentiment", 800, 400))]
    settings = {"rate": args.rate, "ema": 0.8, "spread": 0.4, "batch_size": 16, "epochs": 2}
    print(f"budget {args.rate}, {args.seeds} seeds, max_length 64, "
          + ", ".join(f"{k} {v}" for k, v in settings.items() if k != "rate"))
    print(f"{'task':7} {'variant':17} {'realised':>9} {'SE':>8} {'z':>6}   per epoch")
    for name, cfg in tasks:
        try:
            items = encode(tokenizer, load_task(cfg).train, 64)
        except Exception as e:  # noqa: BLE001  (a missing data folder skips that task)
            print(f"{name:7} skipped: {type(e).__name__}: {e}")
            continue
        for variant in ("project", "all-seen", "all-seen-drawfree", "reference"):
            runs = np.array([simulate(items, special_ids, tokenizer.vocab_size, seed=seed, variant=variant,
                                      **settings) for seed in range(args.seeds)], dtype=float)  # (S, E, 2)
            per_run = runs[:, :, 0].sum(1) / runs[:, :, 1].sum(1)
            per_epoch = runs[:, :, 0] / runs[:, :, 1]
            mean, se = per_run.mean(), per_run.std(ddof=1) / np.sqrt(len(per_run))
            epochs = "  ".join(f"{m:.4f}±{s:.4f}" for m, s in zip(
                per_epoch.mean(0), per_epoch.std(0, ddof=1) / np.sqrt(len(per_run)), strict=True))
            print(f"{name:7} {variant:17} {mean:9.4f} {se:8.4f} {(mean - args.rate) / se:+6.1f}   {epochs}")


if __name__ == "__main__":
    main()
