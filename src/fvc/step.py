"""One optimizer step of a fold, made robust to out-of-memory errors.

A step has two parts with different answers to an OOM:

1. :func:`forward_backward` (micro-batches with gradient accumulation, autocast, class
   weights) changes only gradients, BatchNorm running statistics and the RNG. An OOM there is
   undone by a rollback of exactly those, and :func:`robust_step` retries, then halves the
   micro-batch down to ``memory.min_batch_size``, then skips the batch
   (:func:`fvc.memory.call_with_oom_recovery`).
2. :func:`apply_update` (``GradScaler.unscale_``/``step``/``update`` or ``optimizer.step``)
   changes weights, optimizer moments and the loss scale in place, tensor by tensor (a foreach
   AdamW updates weights before it allocates its temporaries). An OOM there leaves a state
   that no cheap rollback restores, so it is **never retried**: :class:`StepStateLost` stops the
   fold without writing that state, and the rerun resumes from the last checkpoint, which
   holds a consistent state. Restoring the exact pre-step state instead would need a copy of
   weights, optimizer and scaler before every step (3x the model in memory, or a
   device-to-host copy per step) to guard against a rare event that, on a rerun, costs at most
   ``train.checkpoint_every_s`` of training.

The epoch loop is :mod:`fvc.train`.
"""

from __future__ import annotations

import contextlib
import logging

import torch
import torch.nn.functional as F
from torch import nn

from fvc.datasets import to_model_input
from fvc.fold_state import Run
from fvc.memory import call_with_oom_recovery, error_line, is_oom_error

log = logging.getLogger("fvc.train")  # one logger name for the whole training of a fold

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class StepStateLost(RuntimeError):
    """Out of memory inside the optimizer/scaler update: weights may be half-updated."""


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Autocast to bf16 or fp16 for ``precision`` (resolved, not ``auto``); ``off``: nothing."""
    dtype = AUTOCAST_DTYPES.get(precision, torch.float32)
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=precision != "off")


def forward_backward(run: Run, x: torch.Tensor, y: torch.Tensor, micro: int) -> torch.Tensor:
    """Gradients of the effective batch ``(x, y)``, in micro-batches of ``micro``; the loss.

    Each micro-batch's class-weighted loss sum is divided by the whole batch's weight sum, so
    the accumulated gradient is the full batch's (weighted) mean-loss gradient at any ``micro``.
    The loss is returned as a device tensor: reading it would wait for the GPU.
    """
    run.optimizer.zero_grad(set_to_none=True)
    y = y.to(run.device, non_blocking=True)
    w = run.loss_weights[y]
    denom = w.sum()
    total = torch.zeros((), device=run.device)
    for i in range(0, len(y), micro):
        xb = to_model_input(x[i : i + micro], run.norm)
        with autocast(run.device, run.precision):
            logits = run.model(xb)
        per_sample = F.cross_entropy(logits.float(), y[i : i + micro], reduction="none")
        loss = (per_sample * w[i : i + micro]).sum() / denom
        (run.scaler.scale(loss) if run.scaler is not None else loss).backward()
        total += loss.detach()
        del xb, logits, per_sample, loss
    return total


def apply_update(run: Run) -> None:
    """The optimizer step (through the GradScaler with fp16); an OOM is :class:`StepStateLost`.

    With bf16 on the CPU (no GradScaler) a step with non-finite gradients is skipped, as
    GradScaler does: measured here, oneDNN's bf16 Conv3d backward sporadically returns inf
    weight gradients (1 step in 20-300) that would otherwise turn every weight into NaN. (On
    CUDA that check would cost a sync per step; non-finite predictions stop the fold instead.)
    """
    error = None
    try:
        if run.scaler is not None:
            run.scaler.step(run.optimizer)
            run.scaler.update()
        elif run.precision == "bf16" and run.device.type == "cpu" and not _grads_finite(run.model):
            run.optimizer.zero_grad(set_to_none=True)
            log.warning("non-finite bf16 gradients: optimizer step skipped (as GradScaler would)")
            if run.memlog is not None:
                run.memlog.event("nonfinite_grad", micro_batch_size=run.pos.micro_batch_size)
        else:
            run.optimizer.step()
        return
    except Exception as exc:
        if not is_oom_error(exc):
            raise
        error = error_line(exc)
    # outside the except block: its traceback would pin the failed step's tensors
    raise StepStateLost(f"out of memory inside the optimizer step ({error})")


def _grads_finite(model: nn.Module) -> bool:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()) if grads else True


class Rollback:
    """Undo a failed :func:`forward_backward`: gradients, BatchNorm buffers and the RNG.

    The buffer copies are allocated once and refreshed with one foreach copy per step (a few
    kernels, no allocation); the RNG states are small host tensors.
    """

    def __init__(self, run: Run) -> None:
        self.run = run
        self.buffers = [b for b in run.model.buffers()]
        self.saved = [b.detach().clone() for b in self.buffers]
        self.cuda = run.device.type == "cuda"

    def take(self) -> None:
        if self.buffers:
            torch._foreach_copy_(self.saved, self.buffers)
        self.rng = torch.get_rng_state()
        self.cuda_rng = torch.cuda.get_rng_state(self.run.device) if self.cuda else None

    def __call__(self) -> None:
        self.run.optimizer.zero_grad(set_to_none=True)
        if self.buffers:
            with torch.no_grad():
                torch._foreach_copy_(self.buffers, self.saved)
        torch.set_rng_state(self.rng)
        if self.cuda:
            torch.cuda.set_rng_state(self.cuda_rng, self.run.device)


def robust_step(
    run: Run, x: torch.Tensor, y: torch.Tensor, rollback: Rollback
) -> torch.Tensor | None:
    """One step with OOM recovery; returns the loss (device tensor), or None if skipped.

    An OOM in the forward/backward pass is rolled back and retried (at any micro-batch size the
    retry computes what a first attempt would); a reduced micro-batch is kept in ``run.pos``
    for the rest of the fold. An OOM in the update raises :class:`StepStateLost`.
    """
    pos = run.pos
    rollback.take()
    loss, pos.micro_batch_size = call_with_oom_recovery(
        lambda micro: forward_backward(run, x, y, micro),
        pos.micro_batch_size,
        run.policy,
        rollback,
        run.memlog,
        where={"epoch": pos.epoch + 1, "batch": pos.batch_in_epoch + 1},
    )
    if loss is None:
        run.optimizer.zero_grad(set_to_none=True)
        return None
    apply_update(run)
    return loss
