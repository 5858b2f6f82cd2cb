"""training.precision: bf16 and fp16 autocast run end to end on the CPU; fp32 keeps its run_ids;
Typhoon's saliency and calibration are exact under a gradient scaler; GPU checks (marker `gpu`)
skip without CUDA."""

from __future__ import annotations

import pytest
import torch
from maskers.maskertools import batches, make_masker, model_inputs, sentences, tiny_backbone
from protocoltools import tiny_protocol_dict

from study.maskers.typhoon import calibrate, propensity
from study.precision import Precision
from study.protocol import parse_protocol
from study.spec import expand
from study.train import run_one

MASKERS = [{"name": "none", "kind": "none"}, {"name": "typhoon", "kind": "typhoon", "rate": 0.2},
           {"name": "tlm", "kind": "tlm", "rate": 0.1}]


def specs(precision: str | None):
    training = {**tiny_protocol_dict()["training"]}
    if precision is not None:
        training["precision"] = precision
    return expand(parse_protocol(tiny_protocol_dict(seeds=[0], maskers=MASKERS, training=training,
                                                    execution={"threads_per_run": 1})))


def test_fp32_keeps_run_ids_and_other_precisions_change_them():
    unset, fp32, bf16 = specs(None), specs("fp32"), specs("bf16")
    assert [s.run_id for s in unset] == [s.run_id for s in fp32]
    assert not {s.run_id for s in bf16} & {s.run_id for s in fp32}


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_runs_end_to_end_on_cpu(precision):
    """Every masker family trains under autocast; the result differs from fp32 only in float noise."""
    for low, full in zip(specs(precision)[1:], specs("fp32")[1:], strict=True):
        a, b = run_one(low), run_one(full)
        assert a.env["precision"] == precision and b.env["precision"] == "fp32"
        assert all(torch.isfinite(torch.tensor(e["train_loss"])) for e in a.epochs)
        assert 0 <= a.final_metrics["macro_f1"] <= 1
        # autocast really ran: the eval scores are not fp32's, but they are close to them
        sa, sb = torch.tensor([r[3] for r in a.predictions]), torch.tensor([r[3] for r in b.predictions])
        assert not torch.equal(sa, sb)
        assert (sa - sb).abs().max() < 0.05
        assert a.epochs[0]["train_loss"] == pytest.approx(b.epochs[0]["train_loss"], abs=0.05)
        if low.masker["kind"] == "typhoon":
            assert a.masker_state["updates"] == b.masker_state["updates"] == 3


def _typhoon_after_steps(precision: Precision, *, tell_scale: bool = True):
    """Three training steps of train.py's order with a Typhoon masker; returns the masker."""
    model, tokenizer, context = tiny_backbone("bert", layers=1)
    items, batch_list = batches(tokenizer, sentences(24), 8)
    masker = make_masker("typhoon", context, rate=0.2, spread=0.8)
    masker.setup(model, tokenizer, items, 3)
    masker.attach(model)
    for step, batch in enumerate(batch_list):
        masked = masker.apply(batch, step)
        with precision.autocast():
            loss = torch.nn.functional.cross_entropy(model(**model_inputs(masked)).logits.float(), masked["labels"])
        precision.backward(loss)
        if tell_scale and precision.scaler:
            masker.loss_scale = precision.loss_scale
        masker.after_backward(step)
        model.zero_grad(set_to_none=True)
    masker.detach()
    return masker


def test_typhoon_saliency_is_exact_under_a_gradient_scaler():
    """fp16's scaler multiplies every gradient by 2^k; Typhoon divides it out, exactly (a power of 2).
    fp32 compute with a scaler isolates the scaler's effect: the EMA must equal the unscaled run's bit for bit."""
    cpu = torch.device("cpu")
    plain = _typhoon_after_steps(Precision("fp32", cpu))
    scaled = Precision("fp32", cpu)
    scaled.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    with_scaler = _typhoon_after_steps(scaled)
    assert with_scaler.w.dtype == torch.float64 and with_scaler.updates == 3
    assert torch.equal(with_scaler.w, plain.w) and torch.equal(with_scaler.seen, plain.seen)
    # Negative control: without the factor the saliencies are 2^16 times too large.
    scaled.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    ignorant = _typhoon_after_steps(scaled, tell_scale=False)
    assert not torch.equal(ignorant.w, plain.w)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_typhoon_calibration_meets_the_budget_under_autocast(precision):
    masker = _typhoon_after_steps(Precision(precision, torch.device("cpu")))
    assert masker.w.dtype == torch.float64 and bool(torch.isfinite(masker.w).all())
    phi = propensity(masker.w[masker.support], masker.seen[masker.support], masker.params.spread)
    q, _ = calibrate(masker.counts, phi, 0.2)
    n = masker.counts
    assert float((n * q).sum() / n.sum()) == pytest.approx(0.2, abs=1e-12)  # float64 throughout
    assert float(phi.max() - phi.min()) > 0  # saliency spread the propensities: not a uniform fallback


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_on_gpu(precision):
    spec = specs(precision)[1]
    result = run_one(spec)
    assert result.env["precision"] == precision and result.env["device"] != "cpu"
    assert all(torch.isfinite(torch.tensor(e["train_loss"])) for e in result.epochs)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_resume_is_bit_identical_on_gpu_when_deterministic(tmp_path):
    from study.checkpoint import checkpoint_path

    data = tiny_protocol_dict(seeds=[0], maskers=MASKERS[:2],
                              execution={"deterministic": True, "checkpoint_every_steps": 1})
    spec = expand(parse_protocol(data))[1]
    straight = run_one(spec)
    run_one(spec, max_steps=2, checkpoint_dir=tmp_path)
    assert checkpoint_path(tmp_path, spec.run_id).is_file()
    resumed = run_one(spec, checkpoint_dir=tmp_path)
    assert resumed.resumed_from_step == 2
    assert resumed.predictions == straight.predictions and resumed.masker_state == straight.masker_state


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_bench_measures_both_precisions():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(root / "bench" / "gpu.py"), "--steps", "3", "--warmup", "1",
                          "--skip-maskers", "--skip-packing"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("bf16") == 2 and out.stdout.count("fp32") == 2
