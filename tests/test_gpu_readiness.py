"""Fixes from the CUDA code review (issue 24), each guarded on the CPU: the device override and
cuBLAS workspace, the packing benchmark's GPU argument, fp32 loading of low-precision
checkpoints, every CUDA out-of-memory message, the fork server's cached device answers, host
reads in the maskers, the TF32 API, CUDA_VISIBLE_DEVICES on clusters, the pinned attention kernel."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from study import device as device_mod
from study.device import DEVICE_ENV, attention_kernels, pick_device
from study.seeding import configure_determinism
from study.syncs import count_host_reads

ROOT = Path(__file__).resolve().parents[1]


# -- 1. device override, cuBLAS workspace, deterministic mode per run --------------------------------

def test_session_keeps_runs_on_the_cpu_and_sets_the_cublas_workspace():
    assert os.environ[DEVICE_ENV] == "cpu"  # tests/conftest.py, before any test ran
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"


def test_device_override_wins_over_a_visible_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv(DEVICE_ENV)
    assert pick_device({"device": "cpu"}).type == "cpu"
    assert pick_device({}).type == "cuda"  # auto takes the GPU
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    assert pick_device({"device": "cuda"}).type == "cpu"  # the environment wins (test sessions)
    monkeypatch.setenv(DEVICE_ENV, "gpu")
    with pytest.raises(ValueError, match="MASKSTUDY_DEVICE: unknown device 'gpu'"):
        pick_device({})


def test_cuda_requested_without_a_gpu_says_so(monkeypatch):
    monkeypatch.delenv(DEVICE_ENV)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="execution.device is 'cuda' but no CUDA GPU"):
        pick_device({"device": "cuda"})


def test_protocol_accepts_the_device_key_and_rejects_others():
    from protocoltools import tiny_protocol_dict

    from study.errors import ProtocolError
    from study.protocol import parse_protocol

    assert parse_protocol(tiny_protocol_dict(execution={"device": "cpu"})).execution.device == "cpu"
    with pytest.raises(ProtocolError, match="device"):
        parse_protocol(tiny_protocol_dict(execution={"device": "tpu"}))


def test_determinism_refuses_a_cuda_process_started_without_the_workspace(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    try:
        with pytest.raises(RuntimeError, match="CUBLAS_WORKSPACE_CONFIG=:4096:8"):
            configure_determinism(True)
        monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
        flags = configure_determinism(True)  # CUDA not started yet: the variable is still read
        assert flags["cublas_workspace_config"] == ":4096:8" and torch.are_deterministic_algorithms_enabled()
        configure_determinism(False)  # the next run in this process is not deterministic
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)


# -- 2. bench/gpu.py packs on GPU 0 --------------------------------------------------------------------

def test_gpu_bench_packs_runs_on_a_gpu():
    from study.scheduler.local import parse_gpus

    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "bench" / "gpu.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    command = bench.packing_command(Path("p.yaml"))
    assert parse_gpus(command[command.index("--gpus") + 1]) == [0]


# -- 3. checkpoints stored in bf16 / fp16 load as fp32 ---------------------------------------------------

@pytest.mark.parametrize("stored", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_low_precision_checkpoint_loads_as_fp32(tmp_path, stored, pooling):
    from transformers import AutoTokenizer, BertConfig, BertModel

    from study.models import load_model, resolve_source

    tokenizer = AutoTokenizer.from_pretrained(resolve_source("builtin:minilm-l6"))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    BertModel(config).to(stored).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] in ("bfloat16", "float16")
    loaded = load_model({"source": str(tmp_path), "pooling": pooling}, 3, 0)
    assert {p.dtype for p in loaded.model.parameters()} == {torch.float32}
    batch = tokenizer(["a short text", "another one here"], padding=True, return_tensors="pt")
    logits = loaded.model(**batch).logits  # mean pooling met bf16 states with an fp32 head before
    assert logits.dtype == torch.float32 and logits.shape == (2, 3)


# -- 4. every CUDA out-of-memory message -------------------------------------------------------------------

@pytest.mark.parametrize("error", ["oom", "oom-context", "oom-cublas", "oom-cudnn"])
def test_every_cuda_oom_message_is_recognised(tmp_path, error):
    """The test-fault masker raises each message inside a real worker; its exit code is 3 (OOM)."""
    from protocoltools import tiny_protocol_dict

    from study.protocol import parse_protocol
    from study.spec import expand

    data = tiny_protocol_dict(seeds=[0], maskers=[{"name": "none", "kind": "none"},
                                                  {"name": "x", "kind": "test-fault", "fail": "always", "error": error}],
                              training={**tiny_protocol_dict()["training"], "epochs": 1})
    from study.maskers import MASKERS
    from study.maskers.testing import ENTRY, KIND

    spec_file, result_file = tmp_path / "spec.json", tmp_path / "result.json"
    with MASKERS.scoped(KIND, ENTRY):
        spec_file.write_text(expand(parse_protocol(data))[1].to_json())
    out = subprocess.run([sys.executable, "-m", "study.worker", str(spec_file), str(result_file)],
                         capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env={**os.environ, "MASKSTUDY_TEST_MASKERS": "1"})
    assert out.returncode == 3, out.stderr[-2000:]
    assert not result_file.exists()


def test_is_oom_matches_the_messages_and_nothing_else():
    from study.worker import is_oom

    assert is_oom(RuntimeError("CUDA error: out of memory"))
    assert is_oom(RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"))
    assert is_oom(RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"))
    assert not is_oom(RuntimeError("CUDA error: device-side assert triggered"))
    assert not is_oom(ValueError("out of range"))


# -- 5. the fork server hands its children no cached device answers -----------------------------------------

WARM_UP_PROBE = """
import functools, json, sys, torch
calls = []
def record(name, original):
    @functools.wraps(original)
    def wrapper(*a, **k):
        calls.append(name)
        return original(*a, **k)
    return wrapper
for name in ("is_available", "device_count", "_lazy_init", "get_device_capability"):
    setattr(torch.cuda, name, record(name, getattr(torch.cuda, name)))
from study.scheduler.forkserver import _DEVICE_ANSWER, warm_up
warm = {"tasks": [{"name": "t", "dataset": "tweets-sentiment", "max_train_examples": 8}],
        "models": [{"name": "m", "source": "builtin:minilm-l6", "num_hidden_layers": 1}]}
notes = warm_up(warm)
import transformers.utils.import_utils as iu
cached = [n for n, f in vars(iu).items() if hasattr(f, "cache_info") and f.cache_info().currsize and _DEVICE_ANSWER.search(n)]
print(json.dumps({"calls": calls, "cached": cached, "notes": notes}))
"""


def test_warm_up_asks_cuda_nothing_and_leaves_no_cached_device_answers():
    out = subprocess.run([sys.executable, "-c", WARM_UP_PROBE], capture_output=True, text=True, cwd=ROOT,
                         timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-2000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen == {"calls": [], "cached": [], "notes": []}


def test_forget_device_answers_clears_what_warm_up_filled():
    import transformers.utils.import_utils as iu

    from study.scheduler.forkserver import forget_device_answers

    iu.is_torch_cuda_available()
    iu.is_flash_attn_2_available()
    cleared = forget_device_answers()
    assert {"is_torch_cuda_available", "is_flash_attn_2_available"} <= set(cleared)
    assert iu.is_torch_cuda_available.cache_info().currsize == 0


# -- 6. maskers do not wait for the device ----------------------------------------------------------------

def _context(tokenizer, loaded, device: str = "cpu"):
    from study.maskers.base import MaskerContext

    return MaskerContext(replacement_id=loaded.replacement_id, replacement=loaded.replacement,
                         pad_token_id=tokenizer.pad_token_id,
                         special_ids=torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long),
                         num_layers=loaded.num_layers, num_heads=loaded.num_heads, is_decoder=False,
                         device=torch.device(device))


@pytest.fixture(scope="module")
def tiny_task():
    from study.models import load_model
    from study.protocol import TaskConfig
    from study.tasks import load_task
    from study.tasktypes.classification import collate, encode

    task = load_task(TaskConfig(name="t", dataset="tweets-sentiment", max_train_examples=16, max_eval_examples=2))
    loaded = load_model({"source": "builtin:minilm-l6", "num_hidden_layers": 1}, task.num_labels, 0)
    items = encode(loaded.tokenizer, task.train, 24)
    batch = collate(items, loaded.tokenizer.pad_token_id, torch.device("cpu"))
    return loaded, items, batch


def _masker(kind, loaded, **params):
    from study.registry import masker_class

    cls = masker_class(kind)
    return cls(cls.Params(**params), torch.Generator().manual_seed(0), _context(loaded.tokenizer, loaded))


def test_whole_word_masking_makes_no_host_read(tiny_task):
    loaded, items, batch = tiny_task
    masker = _masker("whole-word", loaded, rate=0.3)
    masker.setup(loaded.model, loaded.tokenizer, items, 10)
    with count_host_reads(torch.device("cpu")) as reads:
        masked = masker.apply(dict(batch), 0)
    assert reads.calls == []
    # the same draws as when the bounds are read from the device (published results unchanged)
    again = _masker("whole-word", loaded, rate=0.3)
    again.setup(loaded.model, loaded.tokenizer, items, 10)
    without = again.apply({k: v for k, v in batch.items() if k != "_word_bounds"}, 0)
    assert torch.equal(masked["input_ids"], without["input_ids"])


def test_drophead_sync_free_sampler_has_the_conditional_distribution():
    """P(pattern) = Π p(x_h) / (1 − rate^H) over patterns with a kept head, by exact enumeration."""
    import itertools

    from scipy import stats

    from study.maskers.drophead import sample_keep, sample_keep_sync_free

    heads, rate, n = 3, 0.6, 200_000
    with count_host_reads(torch.device("cpu")) as reads:
        keep = sample_keep_sync_free(n, heads, rate, torch.Generator().manual_seed(1), "cpu")
    assert reads.calls == []  # the loop in sample_keep reads the device once per draw round
    patterns = list(itertools.product([False, True], repeat=heads))[1:]  # every pattern with a kept head
    expected = [math.prod((1 - rate) if k else rate for k in p) / (1 - rate ** heads) for p in patterns]
    codes = (keep.long() * torch.tensor([4, 2, 1])).sum(1)
    observed = [int((codes == sum(b << (heads - 1 - i) for i, b in enumerate(p))).sum()) for p in patterns]
    assert sum(observed) == n  # no row without a kept head
    assert stats.chisquare(observed, [e * n for e in expected]).pvalue > 1e-3
    loop = sample_keep(n, heads, rate, torch.Generator().manual_seed(2), "cpu")
    loop_codes = (loop.long() * torch.tensor([4, 2, 1])).sum(1)
    loop_observed = [int((loop_codes == c).sum()) for c in range(1, 8)]
    by_code = [observed[patterns.index(tuple(bool(c >> (heads - 1 - i) & 1) for i in range(heads)))]
               for c in range(1, 8)]
    assert stats.chi2_contingency([by_code, loop_observed]).pvalue > 1e-3
    zero = sample_keep_sync_free(50, heads, 0.0, torch.Generator().manual_seed(3), "cpu")
    assert bool(zero.all())


def test_typhoon_calibrates_on_host_copies(tiny_task, monkeypatch):
    from study.maskers import typhoon

    loaded, items, batch = tiny_task
    masker = _masker("typhoon", loaded, rate=0.2)
    masker.setup(loaded.model, loaded.tokenizer, items, 10)
    copies, seen_args = [], []
    real_copies, real_propensity, real_calibrate = typhoon.host_copies, typhoon.propensity, typhoon.calibrate
    monkeypatch.setattr(typhoon, "host_copies", lambda *t: copies.extend(real_copies(*t)) or copies[-len(t):])
    monkeypatch.setattr(typhoon, "propensity", lambda w, s, f: seen_args.extend([w, s]) or real_propensity(w, s, f))
    monkeypatch.setattr(typhoon, "calibrate",
                        lambda n, phi, r: seen_args.append(n) or real_calibrate(n, phi, r))
    masker.apply(dict(batch), 0)
    assert len(copies) == 2 and seen_args[0] is copies[0] and seen_args[1] is copies[1]
    assert seen_args[2] is masker.counts_host


# -- 7. TF32 through the current API ----------------------------------------------------------------------

def test_tf32_uses_fp32_precision_where_torch_has_it():
    from study.precision import set_tf32

    if not hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        pytest.skip("this torch predates fp32_precision")
    before = (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision,
              torch.backends.cudnn.rnn.fp32_precision)
    try:
        set_tf32(True)
        assert torch.backends.cuda.matmul.fp32_precision == "tf32"
        assert torch.backends.cudnn.conv.fp32_precision == "tf32"
        set_tf32(False)
        assert torch.backends.cuda.matmul.fp32_precision == "ieee"
        assert torch.backends.cudnn.rnn.fp32_precision == "ieee"
    finally:
        (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision,
         torch.backends.cudnn.rnn.fp32_precision) = before


# -- 8. CUDA_VISIBLE_DEVICES as a cluster gave it ------------------------------------------------------

@pytest.mark.parametrize("visible, expected", [
    ("2,3", [2, 3]),
    ("GPU-8f6a1c2e-0b1d-4c1e-9f0a-1b2c3d4e5f60,GPU-1a2b3c4d-0000-1111-2222-333344445555",
     ["GPU-8f6a1c2e-0b1d-4c1e-9f0a-1b2c3d4e5f60", "GPU-1a2b3c4d-0000-1111-2222-333344445555"]),
    ("MIG-4b3f1e2d-aaaa-bbbb-cccc-ddddeeeeffff", ["MIG-4b3f1e2d-aaaa-bbbb-cccc-ddddeeeeffff"]),
    ("0,-1,1", [0]),
    ("", []),
])
def test_detect_gpus_keeps_cuda_visible_devices_as_given(monkeypatch, visible, expected):
    from study.scheduler.launch import worker_env
    from study.scheduler.local import detect_gpus

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    gpus = detect_gpus()
    assert gpus == expected
    for gpu in gpus:
        env = worker_env(1, gpu)
        assert env["CUDA_VISIBLE_DEVICES"] == str(gpu) and env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"


# -- 9. one attention kernel for every masker on CUDA ----------------------------------------------------

def test_attention_kernel_is_pinned_on_cuda_only():
    flags = (torch.backends.cuda.flash_sdp_enabled, torch.backends.cuda.mem_efficient_sdp_enabled,
             torch.backends.cuda.math_sdp_enabled)
    before = [f() for f in flags]
    with attention_kernels(torch.device("cpu")):
        assert [f() for f in flags] == before
    with attention_kernels(torch.device("cuda")):
        assert [f() for f in flags] == [False, True, True]  # no flash: its dropout draws differ
    assert [f() for f in flags] == before
    assert device_mod.PINNED_ATTENTION_KERNELS == ("efficient", "math")


# -- found on the first GPU (an H200): what kept the fork server from forking --------------------------

def test_fork_server_environment_stops_pyarrows_jemalloc_thread():
    """pyarrow's bundled jemalloc started a background thread in the server; a second thread makes
    forking unsafe, and the pool fell back to fresh interpreters (2.4 runs/min instead of more)."""
    from study.scheduler.launch import worker_env

    assert worker_env(1, None, start="forkserver", base={})["JE_ARROW_MALLOC_CONF"] == "background_thread:false"
    assert worker_env(1, None, base={"JE_ARROW_MALLOC_CONF": "narenas:1"})["JE_ARROW_MALLOC_CONF"] == "narenas:1"


def test_fork_safety_allows_a_mapped_but_uninitialised_cuda_driver(monkeypatch):
    """A CUDA build of torch maps libcuda.so at import (torch 2.11+cu130 on the H200) without
    initialising the driver: that alone must not stop the server from forking."""
    import builtins
    import io

    from study.scheduler import forkserver

    real_open = builtins.open

    def fake_open(path, *args, **kwargs):
        if str(path) == "/proc/self/maps":
            return io.StringIO("7f00-7f01 r-xp 0 0:0 0 /usr/lib/x86_64-linux-gnu/libcuda.so.580.159.04\n")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(forkserver.os, "listdir", lambda path: ["1"] if "task" in str(path) else os.listdir(path))
    assert forkserver.fork_safety() == ""


def test_special_ids_move_to_the_run_device_once(tiny_task):
    """Copied from the host at every step, they made input-level maskers wait for the GPU once a step."""
    from dataclasses import replace

    from study.registry import masker_class

    loaded, _, _ = tiny_task
    context = replace(_context(loaded.tokenizer, loaded), device=torch.device("meta"))
    cls = masker_class("random-token")
    masker = cls(cls.Params(rate=0.1), torch.Generator().manual_seed(0), context)
    assert masker.context.special_ids.device.type == "meta"
    assert context.special_ids.device.type == "cpu"  # the caller's context is left as it was
