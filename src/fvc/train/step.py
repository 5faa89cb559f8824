"""One optimizer step, made robust to out-of-memory errors, and the ONE OOM-halving policy.

A step has two parts with different answers to an OOM:

1. :func:`forward_backward` (micro-batches with gradient accumulation, autocast, class
   weights) changes only gradients, BatchNorm running statistics and the RNG. An OOM there is
   undone by a rollback of exactly those, and :func:`robust_step` retries, then halves the
   micro-batch down to ``memory.min_batch_size``, then skips the batch
   (:func:`call_with_oom_recovery`, the policy evaluation and prediction use too).
2. :func:`apply_update` (``GradScaler.unscale_``/``step``/``update`` or ``optimizer.step``)
   changes weights, optimizer moments and the loss scale in place, tensor by tensor (a foreach
   AdamW updates weights before it allocates its temporaries). An OOM there leaves a state
   that no cheap rollback restores, so it is **never retried**: :class:`StepStateLost` stops the
   run without writing that state, and the rerun resumes from the last checkpoint, which
   holds a consistent state. Restoring the exact pre-step state instead would need a copy of
   weights, optimizer and scaler before every step (3x the model in memory, or a
   device-to-host copy per step) to guard against a rare event that, on a rerun, costs at most
   ``train.checkpoint_every_s`` of training.

   The one exception is an optimizer's *first* update (:class:`FirstUpdate`): AdamW allocates
   its moments there, the likeliest allocation of all to fail, and before any checkpoint
   exists, so "rerun to resume" would only repeat it. While the optimizer holds no state, a
   host copy of the weights and the GradScaler's state is kept, and an OOM in that update is
   undone and retried like one in forward/backward.

The epoch loop is :mod:`fvc.train.loop`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from fvc.datasets import to_model_input
from fvc.memory import MemoryLog, MemoryPolicy, aggressive_gc, error_line, is_oom_error
from fvc.train.precision import autocast, make_scaler
from fvc.train.state import Run

log = logging.getLogger(__name__)
T = TypeVar("T")


class StepStateLost(RuntimeError):
    """Out of memory inside the optimizer/scaler update: weights may be half-updated."""


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


class FirstUpdate:
    """What an optimizer's first update can change, kept while the optimizer has no state.

    The weights (a host copy, made once: the first step only) and the GradScaler's state;
    :meth:`restore` puts them back and drops the half-built optimizer state, so nothing of the
    failed update remains (BatchNorm buffers, gradients and the RNG are :class:`Rollback`'s).
    """

    def __init__(self, run: Run) -> None:
        self.run = run
        self.params = list(run.model.parameters())
        self.weights = [p.detach().to("cpu", copy=True) for p in self.params]
        self.scaler = run.scaler.state_dict() if run.scaler is not None else None

    @torch.no_grad()
    def restore(self) -> None:
        for p, w in zip(self.params, self.weights, strict=True):
            p.copy_(w)
        self.run.optimizer.state.clear()
        if self.scaler is not None:  # a fresh scaler: no half-finished unscale_ bookkeeping
            self.run.scaler = make_scaler(self.run.precision, self.run.device)
            self.run.scaler.load_state_dict(self.scaler)


def apply_update(run: Run, first: FirstUpdate | None = None) -> None:
    """The optimizer step (through the GradScaler with fp16); an OOM is :class:`StepStateLost`,
    except in the optimizer's first update (``first``): that one is restored and re-raised, for
    the OOM policy to retry.

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
        if first is not None:
            first.restore()
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
    for the rest of the fold. An OOM in the update raises :class:`StepStateLost`, unless it is
    the optimizer's first (:class:`FirstUpdate`): then the update is part of the attempt.
    """
    pos = run.pos
    rollback.take()
    first = FirstUpdate(run) if not run.optimizer.state else None

    def attempt(micro: int) -> torch.Tensor:
        loss = forward_backward(run, x, y, micro)
        if first is not None:
            apply_update(run, first)
        return loss

    loss, pos.micro_batch_size = call_with_oom_recovery(
        attempt,
        pos.micro_batch_size,
        run.policy,
        rollback,
        run.memlog,
        where={"epoch": pos.epoch + 1, "batch": pos.batch_in_epoch + 1},
    )
    if loss is None:
        run.optimizer.zero_grad(set_to_none=True)
        return None
    if first is None:
        apply_update(run)
    return loss


def call_with_oom_recovery(
    attempt: Callable[[int], T],
    micro: int,
    policy: MemoryPolicy,
    rollback: Callable[[], None] | None = None,
    memlog: MemoryLog | None = None,
    where: dict[str, Any] | None = None,
    phase: str = "",
    size_key: str = "micro_batch_size",
) -> tuple[T | None, int]:
    """Run ``attempt(micro)`` under the OOM policy; returns ``(result, micro)``.

    On an out-of-memory error: ``rollback()`` (undo the failed attempt's side effects), collect
    garbage outside the ``except`` block (its traceback pins the failed tensors), log memory
    statistics, retry up to ``policy.max_oom_retries`` times, then halve ``micro`` (not below
    ``policy.min_batch_size``) and start over. When even the minimum fails, return
    ``(None, micro)``: the caller skips that piece of work and counts it, or fails.

    ``phase`` prefixes the memory-log events (``oom``, ``retry``, ``batch_size``, ``skip``):
    training's have none, evaluation's are ``eval_oom``, ``eval_retry``, ``eval_batch_size``
    (evaluation never skips: its caller fails instead); ``size_key`` names the size field.
    """
    where = where or {}
    tries = 0
    what = f"{phase} batch" if phase else "micro-batch"
    prefix = f"{phase}_" if phase else ""

    def event(name: str, **fields: Any) -> None:
        if memlog is not None:
            memlog.event(prefix + name, **fields, **where)

    while True:
        error = None
        try:
            return attempt(micro), micro
        except Exception as exc:
            if not is_oom_error(exc):
                raise
            error = error_line(exc)
        if rollback is not None:
            rollback()
        aggressive_gc()
        event("oom", error=error, **{size_key: micro})
        log.warning("out of memory at %s, %s %d: %s", where, what, micro, error)
        tries += 1
        if tries <= policy.max_oom_retries:
            event("retry", attempt=tries, **{size_key: micro})
            continue
        if micro > policy.min_batch_size:
            old, micro, tries = micro, max(policy.min_batch_size, micro // 2), 0
            event("batch_size", old=old, **{size_key: micro})
            keeps = "" if phase else " (gradient accumulation keeps the batch)"
            log.warning("%s %d -> %d%s", what, old, micro, keeps)
            continue
        if phase:
            log.error("out of memory at %s at the minimum %s %d", where, what, micro)
        else:
            event("skip", **{size_key: micro})
            log.error("skipping the batch at %s: out of memory at the minimum micro-batch", where)
        return None, micro
