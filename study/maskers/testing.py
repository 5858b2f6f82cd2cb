"""Test fixture, not a regularizer: the ``test-fault`` masker kind injects failures and delays.

Registered only when the environment has ``MASKSTUDY_TEST_MASKERS=1`` (see
``study/maskers/__init__.py``; in-process, ``with MASKERS.scoped(KIND, ENTRY)``), so it never
shows up in the kinds a normal protocol may use. Torch-free like the config layer (torch only
when it raises the OOM), so a CLI that merely validates a test protocol stays torch-free.
The scheduler tests use it to make a cell fail (always, or only on its first attempt), to raise
a CUDA out-of-memory error on CPU, or to keep a worker busy long enough to kill it:

    - {name: boom, kind: test-fault, fail: always}
    - {name: oom-once, kind: test-fault, fail: once, error: oom, marker: /tmp/x/oom-marker}
    - {name: slow, kind: test-fault, sleep_s: 20}
    - {name: slow-once, kind: test-fault, sleep_s: 60, marker: /tmp/x/slow-marker}
    - {name: class-2, kind: test-fault, favour_class: 2}

``favour_class`` gives a run a real, known effect on the metric, which the tiny test models
(a few dozen examples, one layer: every run predicts one class) cannot produce by masking: it
adds a large bias to that class's logit in the classification head, so evaluation predicts it
for (nearly) every example. The sequential-run tests use it to make a comparison decide early.

With a ``marker`` file, the faults (sleep and ``fail: once``) fire only in the attempt that
creates the file; later attempts train normally. Otherwise it trains exactly like ``none``.
The fault fires in ``setup``, after the model and data are loaded, like a real failure would.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Literal

from study.maskers.base import Masker, ParamError
from study.maskers.kinds import MaskerKind

KIND = "test-fault"


@dataclass(frozen=True)
class FaultParams:
    fail: Literal["never", "always", "once"] = "never"
    # oom: the allocator's error; the other oom-*: how context creation, cuBLAS and cuDNN report it
    error: Literal["runtime", "oom", "oom-context", "oom-cublas", "oom-cudnn"] = "runtime"
    marker: str | None = None  # faults fire only in the attempt that creates this file
    sleep_s: float = 0.0  # sleep before training (a window to kill the worker)
    favour_class: int | None = None  # bias the head toward this class (a known effect)

    def __post_init__(self):
        if self.fail == "once" and not self.marker:
            raise ParamError("marker", "fail: once needs a marker file path", "add `marker: /some/tmp/file`")
        if self.sleep_s < 0:
            raise ParamError("sleep_s", f"must be non-negative, got {self.sleep_s}")


class FaultMasker(Masker):
    Params = FaultParams
    level = "none"

    def setup(self, model, tokenizer, train_batches, total_steps) -> None:
        super().setup(model, tokenizer, train_batches, total_steps)
        first = True
        if self.params.marker:
            try:
                os.close(os.open(self.params.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                first = False  # a later attempt: train normally
        if self.params.sleep_s and first:
            time.sleep(self.params.sleep_s)
        if self.params.fail == "always" or (self.params.fail == "once" and first):
            self._raise()
        if self.params.favour_class is not None:
            import torch

            # the head is the model's last Linear layer (BERT-family classifiers, token or sequence)
            head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
            with torch.no_grad():
                head.bias[self.params.favour_class] += 20.0

    def _raise(self) -> None:
        if self.params.error == "oom":
            import torch

            # The class real CUDA OOMs raise; constructible without a GPU.
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected by test-fault)")
        if self.params.error in OOM_RUNTIME_ERRORS:
            raise RuntimeError(OOM_RUNTIME_ERRORS[self.params.error] + " (injected by test-fault)")
        raise RuntimeError("injected failure (test-fault masker)")


# The RuntimeError texts PyTorch raises when memory runs out outside the caching allocator.
OOM_RUNTIME_ERRORS = {
    "oom-context": "CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported at some "
                   "other API call, so the stacktrace below might be incorrect.",
    "oom-cublas": "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
    "oom-cudnn": "cuDNN error: CUDNN_STATUS_ALLOC_FAILED",
}


ENTRY = MaskerKind(FaultParams, FaultMasker)
