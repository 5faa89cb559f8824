"""One optimizer step of a fold, made robust to out-of-memory errors.

:func:`train_step` is the maths (micro-batches with gradient accumulation, AMP, class
weights); :func:`robust_step` wraps it in :func:`fvc.memory.call_with_oom_recovery`: a failed
step is rolled back (gradients, BatchNorm buffers, RNG), memory is collected outside the
``except`` block, the step is retried, then the micro-batch is halved down to
``memory.min_batch_size``, then the batch is skipped. The epoch loop is :mod:`fvc.train`.
"""

from __future__ import annotations

import contextlib
import logging

import torch
import torch.nn.functional as F
from torch import nn

from fvc.datasets import to_model_input
from fvc.fold_state import Run
from fvc.memory import call_with_oom_recovery

log = logging.getLogger("fvc.train")  # one logger name for the whole training of a fold


def autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    """Mixed precision when ``amp``: fp16 on CUDA (with a GradScaler), bf16 on CPU."""
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=amp)


def first_line(exc: BaseException) -> str:
    """``Type: first line`` of an error, short enough for a log line or a JSON event."""
    lines = str(exc).strip().splitlines() or [""]
    return f"{type(exc).__name__}: {lines[0][:200]}"


def train_step(run: Run, x: torch.Tensor, y: torch.Tensor, micro: int) -> float:
    """One optimizer step on the effective batch ``(x, y)``, in micro-batches of ``micro``.

    Each micro-batch's class-weighted loss sum is divided by the whole batch's weight sum, so the
    accumulated gradient is the full batch's (weighted) mean-loss gradient at any ``micro``.

    With AMP on CPU (bf16, no GradScaler) a step with non-finite gradients is skipped, as
    GradScaler does on CUDA: measured here, oneDNN's bf16 Conv3d backward sporadically returns
    inf weight gradients (1 step in 20-300) that would otherwise turn every weight into NaN.
    """
    run.optimizer.zero_grad(set_to_none=True)
    y = y.to(run.device)
    w = run.loss_weights[y]
    denom = w.sum()
    total = torch.zeros((), device=run.device)
    for i in range(0, len(y), micro):
        xb = to_model_input(x[i : i + micro], run.device, run.norm)
        with autocast(run.device, run.amp):
            logits = run.model(xb)
        per_sample = F.cross_entropy(logits.float(), y[i : i + micro], reduction="none")
        loss = (per_sample * w[i : i + micro]).sum() / denom
        (run.scaler.scale(loss) if run.scaler is not None else loss).backward()
        total += loss.detach()
        del xb, logits, per_sample, loss
    if run.scaler is not None:
        run.scaler.step(run.optimizer)
        run.scaler.update()
    elif run.amp and not _grads_finite(run.model):
        run.optimizer.zero_grad(set_to_none=True)
        log.warning("non-finite bf16 gradients: optimizer step skipped (as GradScaler would)")
        if run.memlog is not None:
            run.memlog.event("nonfinite_grad", micro_batch_size=micro)
    else:
        run.optimizer.step()
    return float(total)


def _grads_finite(model: nn.Module) -> bool:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()) if grads else True


def robust_step(run: Run, x: torch.Tensor, y: torch.Tensor) -> float | None:
    """:func:`train_step` with OOM recovery; returns the loss, or None if the batch was skipped.

    A failed attempt may have run part of the forward pass: the rollback restores gradients,
    BatchNorm running statistics and the RNG, so a retry (at any micro-batch size) computes what
    a first attempt would. A reduced micro-batch is kept in ``run.prog`` for the rest of the fold.
    """
    cuda = run.device.type == "cuda"
    rng = torch.get_rng_state(), torch.cuda.get_rng_state(run.device) if cuda else None
    buffers = {k: b.detach().clone() for k, b in run.model.named_buffers()}

    def rollback() -> None:
        run.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            for k, b in run.model.named_buffers():
                b.copy_(buffers[k])
        torch.set_rng_state(rng[0])
        if cuda:
            torch.cuda.set_rng_state(rng[1], run.device)

    prog = run.prog
    loss, prog.micro_batch_size = call_with_oom_recovery(
        lambda micro: train_step(run, x, y, micro),
        prog.micro_batch_size,
        run.policy,
        rollback,
        run.memlog,
        where={"epoch": prog.epoch + 1, "batch": prog.batch_in_epoch + 1},
    )
    return loss
