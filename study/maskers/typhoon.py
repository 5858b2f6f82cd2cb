"""Typhoon: task-adaptive masking by token-type saliency.

Note on use: the original Typhoon used this masking in a masked-language-modelling stage; here
it regularises fine-tuning (the masked tokens are simply replaced, the loss is the task loss),
as the null-result study did.

1. **Saliency, from the normal backward pass.** A forward hook on the input-embedding module
   registers a gradient hook on its output, so the ordinary ``loss.backward()`` of the training
   step leaves g_t = ∂L/∂e_t for every position (no extra forward or backward). For the token
   type v at position t the saliency is s = g_t · E[v] — the entry v of the gradient of the loss
   w.r.t. the one-hot input at t, because e_t = onehot_t @ E. At masked positions v is the
   *original* token (the one-hot input there is the replacement, but the gradient has an entry
   for every type).
2. **Per-type update.** new1[v] = mean of −s over the batch's unmasked eligible occurrences of v,
   new2[v] = mean of +s over its masked occurrences (a missing term counts 0), new = new1 + new2;
   for every type seen in the batch ``w ← (1−α)·w + α·new`` (first sighting: ``w = new``),
   α = ``ema``.
3. **Calibration.** ŝ = min-max normalised w over the seen types (unseen types get 1, so early
   in training masking is uniform); φ_v = 1 − f + f·ŝ_v with f = ``spread``; q_v = min(1, λ·φ_v)
   with λ found by bisection so that Σ_v n_v·q_v = rate · Σ_v n_v, where n_v counts eligible
   occurrences of v in the training set. Without clipping λ is the closed form
   rate·Σn_v / Σn_v·φ_v (used directly then, so the result equals the reference formula).
4. **Masking.** Each eligible position is masked with probability q[token], from the masker's
   own generator.

    - {name: typhoon, kind: typhoon, rate: 0.15}                       # ema 0.8, spread 0.4
    - {name: typhoon-s, kind: typhoon, rate: 0.15, ema: 0.5, spread: 0.8, schedule: linear-warmup}
    - {name: typhoon-ref, kind: typhoon, rate: 0.15, reference: true}  # exactly as the reference code

The run records the most and least salient token types at the end of training (``state()``).

**Two differences from the reference code** (cs324-final-project-2023, ``masking.py``,
``TyphoonMaskedLanguageModelTrainer``), both deliberate; ``reference: true`` reproduces the
reference in both respects:

a. *First sightings after step 1.* The reference keeps one global ``first_step_done`` flag:
   at step 1 every type in the batch gets ``w = new``; afterwards every type in the batch gets
   ``w ← (1−α)·w + α·new`` — a type first seen at a later step starts from its zero weight, so
   ``w = α·new``. The project gives every type ``w = new`` at its own first sighting (the EMA
   then starts from an estimate, not from a zero that is not one).
b. *What the budget is over.* The reference counts every token of the tokenised training set,
   [CLS]/[SEP] included, when it solves for λ (they are never seen, so φ = 1), yet never masks
   them: on maskable tokens its realised rate is below the budget (0.144–0.149 at 0.15 once every
   type is seen, on MRPC, CoLA and tweets: the shorter the sentences, the lower). The project
   counts only eligible tokens, so the expected rate on maskable tokens equals the budget.

**Realised rate above the budget in the first epoch.** Types not seen yet have ŝ = 1, the
highest propensity. During the first epoch a type not seen yet has all its occurrences still
ahead, so it is over-represented in the coming batches relative to the whole-training-set counts
n_v the calibration weighs by, and its tokens are masked at the highest q: the first epoch's
realised rate is above the budget (0.1555 ± 0.0007 at 0.15 on the offline twin's MRPC, epoch 2
0.1509 ± 0.0006; without unseen types epoch 1 is at 0.1509 too). ``bench/typhoon_rate.py``
measures it; the README has the table. Kept as is: the calibration is exact for the training
set as a whole, and the default's results stay what they were.
"""

from __future__ import annotations

import torch

from study.maskers import Masker, register
from study.maskers.base import eligible_positions
from study.maskers.input_level import replace_tokens
from study.maskers.params import TyphoonParams

BISECTION_STEPS = 200  # float64 interval halving: far past the 1e-6 budget tolerance


# ---- the pure pieces (tested on their own) --------------------------------------------------


def token_saliency(grad: torch.Tensor, token_ids: torch.Tensor, embedding_weight: torch.Tensor) -> torch.Tensor:
    """(B, T) saliency s = g_t · E[v_t]: gradient w.r.t. the one-hot input, at the entry of v_t."""
    return (grad.float() * embedding_weight.detach()[token_ids].float()).sum(-1)


def batch_estimates(saliency, token_ids, eligible, masked, vocab_size: int):
    """Per-type ``new`` = mean(−s | unmasked) + mean(+s | masked), and which types the batch saw.

    Shapes: saliency, token_ids, eligible, masked (B, T); returns two (V,) tensors (float64, bool).
    Written with index_add over all positions (zero weights off the mask) so it needs no sync.
    """
    ids = token_ids.reshape(-1)
    s = saliency.reshape(-1).double()
    unmasked = (eligible & ~masked).reshape(-1).double()
    hit = (eligible & masked).reshape(-1).double()
    zeros = torch.zeros(vocab_size, dtype=torch.float64, device=s.device)
    sum1 = zeros.index_add(0, ids, -s * unmasked)
    cnt1 = zeros.index_add(0, ids, unmasked)
    sum2 = zeros.index_add(0, ids, s * hit)
    cnt2 = zeros.index_add(0, ids, hit)
    new = sum1 / cnt1.clamp(min=1) + sum2 / cnt2.clamp(min=1)
    return new, (cnt1 + cnt2) > 0


def ema_update(w, seen, new, seen_batch, alpha: float):
    """``w ← (1−α)·w + α·new`` for types seen before and now; ``w = new`` at a first sighting."""
    first = seen_batch & ~seen
    again = seen_batch & seen
    w = torch.where(again, (1 - alpha) * w + alpha * new, w)
    w = torch.where(first, new, w)
    return w, seen | seen_batch


def ema_update_reference(w, seen, new, seen_batch, alpha: float, first_step: bool):
    """The reference's rule: at the first update ``w = new`` for the batch's types; at every later
    update ``w ← (1−α)·w + α·new`` for the batch's types, so a type first seen then gets
    ``w = α·new`` (its weight starts at zero)."""
    if first_step:
        w = torch.where(seen_batch, new, w)
    else:
        w = torch.where(seen_batch, (1 - alpha) * w + alpha * new, w)
    return w, seen | seen_batch


def propensity(w, seen, spread: float):
    """φ = 1 − f + f·ŝ with ŝ the min-max normalised w over seen types (unseen, or no spread: 1)."""
    s_hat = torch.ones_like(w)
    if bool(seen.any()):
        lo = torch.where(seen, w, torch.full_like(w, float("inf"))).min()
        hi = torch.where(seen, w, torch.full_like(w, float("-inf"))).max()
        span = hi - lo
        if float(span) > 0:
            s_hat = torch.where(seen, (w - lo) / span, s_hat)
    return 1.0 - spread + spread * s_hat


def calibrate(counts: torch.Tensor, phi: torch.Tensor, rate: float) -> tuple[torch.Tensor, float]:
    """q = min(1, λ·φ) with Σ counts·q = rate·Σ counts; returns (q, λ). Float64 throughout.

    Without clipping λ = rate·Σn / Σn·φ exactly (the reference closed form). With clipping the
    budget function λ ↦ Σ n·min(1, λφ) is continuous and non-decreasing, so bisection between
    the closed form (a lower bound) and 1/min φ (every q = 1) finds it.
    """
    n = counts.double()
    phi = phi.double()
    total = float(n.sum())
    target = rate * total
    if total == 0 or rate == 0:
        return torch.zeros_like(phi), 0.0
    lam = target / float((n * phi).sum())
    if lam * float(phi.max()) <= 1.0:
        return lam * phi, lam
    lo, hi = lam, 1.0 / float(phi[n > 0].min())
    for _ in range(BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        if float((n * (mid * phi).clamp(max=1.0)).sum()) < target:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-15 * hi:
            break
    lam = hi
    return (lam * phi).clamp(max=1.0), lam


def host_copies(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """The tensors on the host, waiting for the device once for all of them (not once each)."""
    if all(t.device.type == "cpu" for t in tensors):
        return list(tensors)
    copies = [t.to("cpu", non_blocking=True) for t in tensors]
    torch.cuda.current_stream(tensors[0].device).synchronize()
    return copies


# ---- the masker --------------------------------------------------------------------------------


@register("typhoon")
class TyphoonMasker(Masker):
    Params = TyphoonParams
    level = "input"

    def setup(self, model, tokenizer, train_batches, total_steps):
        super().setup(model, tokenizer, train_batches, total_steps)
        self.tokenizer = tokenizer
        self.embedding = model.get_input_embeddings()
        vocab = self.embedding.weight.shape[0]
        device = self.context.device
        # n_v: eligible occurrences of each type in the whole training set.
        ids = torch.tensor([t for item in train_batches for t in item["input_ids"]], dtype=torch.long)
        attn = torch.tensor([a for item in train_batches for a in item["attention_mask"]], dtype=torch.long)
        # The reference's budget counts every real token, special ones too (difference b).
        ok = attn.bool() if self.params.reference else eligible_positions(ids, attn, self.context.special_ids)
        counts = torch.bincount(ids[ok], minlength=vocab).double()[:vocab]
        self.support = torch.nonzero(counts > 0).squeeze(1).to(device)  # types the budget is over
        self.counts_host = counts[counts > 0]  # the calibration runs on the host (_calibrate)
        self.counts = counts.to(device)[self.support]
        self.w = torch.zeros(vocab, dtype=torch.float64, device=device)
        self.seen = torch.zeros(vocab, dtype=torch.bool, device=device)
        self.q = torch.zeros(vocab, dtype=torch.float32, device=device)
        self.lam = None
        self._calibrated_for: float | None = None  # rate the current q was calibrated to
        self._grad = None
        self._last = None
        self._hook = None
        self.updates = 0

    # -- saliency harvest -------------------------------------------------------------------------
    def attach(self, model) -> None:
        if not hasattr(self, "embedding"):
            raise RuntimeError("typhoon: setup() must run before attach()")
        self._hook = self.embedding.register_forward_hook(self._on_embedding)

    def detach(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        self._grad = None

    def _on_embedding(self, module, inputs, output):
        if not module.training or not torch.is_grad_enabled():
            return None
        if not output.requires_grad:  # frozen embeddings: still ask autograd for ∂L/∂e
            output = output.detach().requires_grad_(True)
            output.register_hook(self._on_grad)
            return output
        output.register_hook(self._on_grad)
        return None

    def _on_grad(self, grad):
        self._grad = grad.detach()

    # -- training-step hooks ----------------------------------------------------------------------
    def rate_at(self, step: int) -> float:
        return self.params.rate_at(step, self.total_steps)

    def _calibrate(self, rate: float) -> None:
        # On the host: the bisection reads its budget up to ~200 times, and each read of a CUDA
        # tensor would wait for the device. One copy of w per step instead (float64 either way).
        w, seen = host_copies(self.w[self.support], self.seen[self.support])
        phi = propensity(w, seen, self.params.spread)
        q, self.lam = calibrate(self.counts_host, phi, rate)
        self.q.zero_()
        self.q[self.support] = q.float().to(self.q.device, non_blocking=True)
        self._calibrated_for = rate

    def apply(self, batch: dict, step: int) -> dict:
        ids, attn = batch["input_ids"], batch["attention_mask"]
        rate = self.rate_at(step)
        if self._calibrated_for != rate:
            self._calibrate(rate)
        eligible = eligible_positions(ids, attn, self.context.special_ids)
        draws = torch.rand(ids.shape, generator=self.generator, device=self.generator.device).to(ids.device)
        chosen = eligible & (draws < self.q.to(ids.device)[ids])
        self.record_tensors(chosen, eligible)
        self._last = (ids, eligible, chosen)
        self._grad = None
        return replace_tokens(batch, chosen, self.context.replacement_id)

    def after_backward(self, step: int) -> None:
        if self._grad is None or self._last is None:
            return
        ids, eligible, chosen = self._last
        grad = self._grad
        if self.loss_scale is not None:
            # fp16: the scaler multiplied the loss; divide it out (a power of 2: exact), and skip a
            # step whose gradients overflowed, as the optimizer does, so the EMA stays calibrated.
            if not bool(torch.isfinite(grad).all()):
                self._grad, self._last = None, None
                return
            grad = grad / self.loss_scale
        s = token_saliency(grad, ids.to(grad.device), self.embedding.weight)
        new, seen_batch = batch_estimates(s, ids, eligible, chosen, self.w.shape[0])
        if self.params.reference:
            self.w, self.seen = ema_update_reference(self.w, self.seen, new, seen_batch, self.params.ema,
                                                     first_step=self.updates == 0)
        else:
            self.w, self.seen = ema_update(self.w, self.seen, new, seen_batch, self.params.ema)
        self._grad, self._last = None, None
        self._calibrated_for = None  # w changed: recalibrate before the next batch
        self.updates += 1

    # -- mid-run checkpoints ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {**super().state_dict(), "w": self.w.cpu(), "seen": self.seen.cpu(), "lam": self.lam,
                "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        device = self.context.device
        self.w, self.seen = state["w"].to(device), state["seen"].to(device)
        self.lam, self.updates = state["lam"], state["updates"]
        self._calibrated_for = None  # q follows from w: recalibrated (deterministically) at the next batch

    # -- what the run records -----------------------------------------------------------------
    def state(self) -> dict:
        if not hasattr(self, "w"):
            return {}
        seen = torch.nonzero(self.seen).squeeze(1)
        weights = self.w[seen]
        order = torch.argsort(weights, descending=True, stable=True)
        k = min(self.params.report_top, len(order))

        def rows(index):
            ids = seen[index].tolist()
            tokens = self.tokenizer.convert_ids_to_tokens(ids)
            return [[tok, float(w)] for tok, w in zip(tokens, self.w[seen[index]].tolist(), strict=True)]

        return {
            "top_salient": rows(order[:k]),
            "least_salient": rows(order.flip(0)[:k]),
            "lambda": self.lam,
            "types_seen": int(seen.numel()),
            "types_in_train": int(self.support.numel()),
            "updates": self.updates,
            "ema": self.params.ema,
            "spread": self.params.spread,
        }
