"""Training of one fold: ``train_one_epoch``, ``evaluate`` and ``fit_fold`` (plain functions).

What makes it robust (issue 3):

- **OOM recovery** (:func:`robust_step`): a failed step is rolled back (gradients, BatchNorm
  buffers, RNG), memory is collected outside the ``except`` block, the step is retried, then the
  micro-batch is halved with gradient accumulation (same effective batch, same loss
  normalisation) down to ``memory.min_batch_size``, then the batch is skipped (counted; the fold
  fails beyond ``memory.max_skip_fraction``). The reduced size is kept and checkpointed.
- **Exact resume**: the checkpoint is one explicit dict (:func:`make_checkpoint`) with model,
  optimizer, scheduler, scaler, position in the epoch, RNG states and history; the epoch's
  batch order is a pure function of (seed, fold, epoch), so a resumed run on CPU ends with
  bit-identical weights.
- **Stopping on purpose**: SIGTERM/SIGUSR1 or the time budget -> finish the step, checkpoint,
  exit with :data:`EXIT_RESUMABLE` so Snakemake's retry resumes.

``python -m fvc.train --help`` runs one fold outside Snakemake (the fault tests use it).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from fvc import checkpoint as ckpt
from fvc.datasets import (
    ClipSet,
    FoldData,
    class_weights,
    collate_batch,
    epoch_batches,
    load_fold,
    to_model_input,
)
from fvc.io import atomic_path, write_json, write_parquet, write_text
from fvc.memory import (
    MemoryLog,
    MemoryPolicy,
    aggressive_gc,
    call_with_oom_recovery,
    is_oom_error,
)
from fvc.metrics import binary_metrics, is_better
from fvc.models import build_model, count_parameters

log = logging.getLogger("fvc.train")  # not __name__: "__main__" under python -m fvc.train

#: Exit status after a deliberate stop with a checkpoint written (EX_TEMPFAIL: "try again").
EXIT_RESUMABLE = 75
DEFAULT_MODEL: dict[str, Any] = {"name": "small3d", "weights": None, "dropout": 0.2}
DEFAULT_TRAIN: dict[str, Any] = {
    "epochs": 8, "batch_size": 16, "lr": 0.003, "weight_decay": 0.0001, "scheduler": "cosine",
    "patience": 0, "best_metric": "roc_auc", "use_amp": False, "num_workers": 0,
    "class_weights": "none", "sampler": "random", "seed": 0, "checkpoint_every_n_batches": 50,
    "keep_epoch_checkpoints": 2, "time_margin_s": 120,
}  # fmt: skip
BEST_METRICS = ("roc_auc", "accuracy", "balanced_accuracy", "f1", "val_loss")
HISTORY_COLUMNS = [
    "epoch", "train_loss", "val_loss", "accuracy", "balanced_accuracy", "f1", "roc_auc", "lr",
    "micro_batch_size", "seconds",
]  # fmt: skip


class TrainingInterrupted(Exception):
    """Training stopped on purpose (signal or time budget) after writing a checkpoint."""


class TrainingFailed(RuntimeError):
    """The fold cannot produce a valid model (too many skipped batches, diverged)."""


def merge_config(section: str, defaults: dict[str, Any], given: dict[str, Any] | None) -> dict:
    """Defaults overlaid with ``given``; an unknown key is an error naming ``section.key``."""
    unknown = sorted(set(given or {}) - set(defaults))
    if unknown:
        raise ValueError(f"{section}: unknown key(s) {', '.join(unknown)}")
    return {**defaults, **(given or {})}


@dataclass
class FoldInputs:
    """The train rule's inputs (docs/artifacts.md); field names = the rule's input names."""

    clips: str
    index: str
    splits: str
    aug_clips: str
    aug_manifest: str


@dataclass
class FoldOutputs:
    """The train rule's declared outputs (docs/artifacts.md)."""

    metrics: str | Path
    predictions: str | Path
    history: str | Path
    model: str | Path
    memory_log: str | Path

    @classmethod
    def in_dir(cls, out_dir: str | Path) -> FoldOutputs:
        d = Path(out_dir)
        names = ("metrics.json", "predictions.parquet", "history.csv", "best_model.pt")
        return cls(*(d / n for n in names), d / "memory.jsonl")


@dataclass
class Progress:
    """Where a fold stands. Every field is a key of the checkpoint dict (plain Python values)."""

    micro_batch_size: int  # may shrink after OOM; kept for the rest of the fold
    eval_batch_size: int
    epoch: int = 0  # completed epochs
    batch_in_epoch: int = 0  # batches of epoch ``epoch + 1`` already consumed
    step: int = 0  # batches consumed in this fold (GC cadence)
    loss_sum: float = 0.0  # sum of per-sample train losses in the current epoch
    samples: int = 0
    seconds: float = 0.0  # time spent in the current epoch (across attempts)
    skipped: int = 0  # batches skipped after OOM at the minimum micro-batch
    batches: int = 0
    bad_epochs: int = 0  # epochs without improvement (early stopping)
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=dict)  # epoch, value, val_loss, metrics, probs
    best_state: dict[str, torch.Tensor] | None = None  # CPU copy of the best epoch's weights


@dataclass
class Run:
    """What the loop functions share for one fold (a plain container, no behaviour)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any  # torch.amp.GradScaler on CUDA with AMP, else None
    device: torch.device
    amp: bool
    loss_weights: torch.Tensor  # per class, on device
    policy: MemoryPolicy
    memlog: MemoryLog
    prog: Progress


def make_checkpoint(run: Run, fp: str, complete: bool = False) -> dict[str, Any]:
    """The ONE checkpoint dict: everything needed to continue bit-identically.

    Keys: ``format``, ``fingerprint``, ``complete``, every :class:`Progress` field (position,
    micro-batch size, running loss, history, best record and weights), the model, optimizer,
    scheduler and scaler states, ``rng`` (torch/CUDA/numpy/python) and library ``versions``.
    """
    sched, scaler = run.scheduler, run.scaler
    return {
        "format": ckpt.FORMAT,
        "fingerprint": fp,
        "complete": complete,
        **{f.name: getattr(run.prog, f.name) for f in dataclasses.fields(Progress)},
        "model_state": run.model.state_dict(),
        "optimizer_state": run.optimizer.state_dict(),
        "scheduler_state": sched.state_dict() if sched is not None else None,
        "scaler_state": scaler.state_dict() if scaler is not None else None,
        "rng": ckpt.capture_rng(),
        "versions": ckpt.library_versions(),
        "saved_at": time.time(),
    }


def restore_checkpoint(run: Run, state: dict[str, Any]) -> None:
    """Load a :func:`make_checkpoint` dict back (RNG last: building the model consumed some)."""
    run.model.load_state_dict(state["model_state"])
    run.optimizer.load_state_dict(state["optimizer_state"])
    if run.scheduler is not None and state["scheduler_state"] is not None:
        run.scheduler.load_state_dict(state["scheduler_state"])
    if run.scaler is not None and state["scaler_state"] is not None:
        run.scaler.load_state_dict(state["scaler_state"])
    for f in dataclasses.fields(Progress):
        setattr(run.prog, f.name, state[f.name])
    now = ckpt.library_versions()
    if state["versions"] != now:
        log.warning("checkpoint from %s, now %s: may not be bit-identical", state["versions"], now)
    ckpt.restore_rng(state["rng"])


def _autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=amp)


def _first_line(exc: BaseException) -> str:
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
        xb = to_model_input(x[i : i + micro], run.device)
        with _autocast(run.device, run.amp):
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


def _ignore_stop_signals(_: int) -> None:
    # DataLoader workers get SLURM's signals too; only the main process decides how to stop
    for sig in ckpt.StopControl.SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def train_one_epoch(
    run: Run,
    data: ClipSet,
    batches: list[np.ndarray],
    stop: ckpt.StopControl,
    save: Callable[[], None],
    num_workers: int = 0,
    checkpoint_every: int = 0,
) -> str | None:
    """Train the epoch's batches from ``prog.batch_in_epoch`` on; returns a stop reason or None.

    ``save()`` writes the latest checkpoint every ``checkpoint_every`` batches. Progress lines are
    logged at each quarter of the epoch (and every 30 s), readable in a plain log file.
    """
    prog = run.prog
    run.model.train()
    loader = torch.utils.data.DataLoader(
        data,
        batch_sampler=[b.tolist() for b in batches[prog.batch_in_epoch :]],
        num_workers=num_workers,
        collate_fn=collate_batch,
        generator=torch.Generator(),  # keeps the global RNG (dropout) untouched by the loader
        worker_init_fn=_ignore_stop_signals if num_workers else None,
        pin_memory=run.device.type == "cuda",
    )
    n, last_log, t0 = len(batches), time.time(), time.time()
    for x, y in loader:
        loss = robust_step(run, x, y)
        prog.batch_in_epoch += 1
        prog.step += 1
        prog.batches += 1
        if loss is None:
            prog.skipped += 1
        else:
            prog.loss_sum += loss * len(y)
            prog.samples += len(y)
        run.policy.after_batch(prog.step)
        now = time.time()
        prog.seconds, t0 = prog.seconds + now - t0, now
        b = prog.batch_in_epoch
        if now - last_log > 30 or 4 * b // n != 4 * (b - 1) // n:
            last_log = now
            bar, loss_avg = "#" * round(20 * b / n), prog.loss_sum / max(prog.samples, 1)
            log.info(
                f"epoch {prog.epoch + 1} [{bar:<20}] {100 * b / n:3.0f}% {b}/{n} batches, "
                f"loss {loss_avg:.4f}, micro-batch {prog.micro_batch_size}"
            )
        reason = stop.reason()
        if reason:
            return reason
        if checkpoint_every and b % checkpoint_every == 0 and b < n:
            save()
    return None


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: ClipSet,
    device: torch.device,
    batch_size: int,
    amp: bool = False,
    memlog: MemoryLog | None = None,
) -> tuple[float, np.ndarray, int]:
    """Mean cross-entropy and P(fake) per clip, in ``data`` order.

    Halves its batch on OOM (down to 1) and returns the batch size that worked, so the next
    epoch starts there.
    """
    model.eval()
    n = len(data)
    probs, loss_sum, i = np.empty(n, dtype=np.float64), 0.0, 0
    while i < n:
        error = None
        try:
            x, y = data.get_batch(np.arange(i, min(n, i + batch_size)))
            with _autocast(device, amp):
                logits = model(to_model_input(x, device))
            logits = logits.float()
            loss_sum += float(F.cross_entropy(logits, y.to(device), reduction="sum"))
            probs[i : i + len(y)] = torch.softmax(logits, 1)[:, 1].cpu().numpy()
            i += len(y)
            continue
        except Exception as exc:
            if not is_oom_error(exc) or batch_size == 1:
                raise
            error = _first_line(exc)
        aggressive_gc()
        batch_size //= 2
        log.warning("OOM during evaluation (%s); eval batch -> %d", error, batch_size)
        if memlog is not None:
            memlog.event("eval_oom", error=error, eval_batch_size=batch_size)
    return loss_sum / max(n, 1), probs, batch_size


def make_scheduler(optimizer: torch.optim.Optimizer, train_cfg: dict[str, Any]) -> Any:
    """Per-epoch LR schedule: none, step (x0.1 every third of the epochs) or cosine."""
    kind, epochs = train_cfg["scheduler"], train_cfg["epochs"]
    if kind == "none":
        return None
    if kind == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, epochs // 3), gamma=0.1)
    if kind == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    raise ValueError(f"train.scheduler: unknown schedule {kind!r} (none, step or cosine)")


def pick_device(device: str | None = None) -> torch.device:
    """CUDA when available (a GPU job), else CPU; ``device`` overrides."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def publish(
    outputs: FoldOutputs, run: Run, fold: int, data: FoldData, model_cfg: dict, metric: str
) -> dict[str, Any]:
    """Write the declared outputs from the best epoch (each atomically); returns the metrics."""
    prog, best = run.prog, run.prog.best
    probs = np.asarray(best["probs"], dtype=np.float64)
    pred = data.val_rows.assign(prob_fake=probs, pred=(probs >= 0.5).astype(np.int64), fold=fold)
    write_parquet(outputs.predictions, pred)
    metrics = {
        "fold": fold,
        "best_epoch": best["epoch"],
        "epochs_trained": prog.epoch,
        "n_train": len(data.train) - data.n_aug,
        "n_val": len(data.val),
        "val_loss": best["val_loss"],
        **best["metrics"],
    }
    write_json(outputs.metrics, metrics)
    history = pd.DataFrame(prog.history, columns=HISTORY_COLUMNS)
    write_text(outputs.history, history.to_csv(index=False))
    best_model = {
        "model_state": prog.best_state,
        "model": model_cfg,
        "epoch": best["epoch"],
        "metric": metric,
        "value": best["value"],
    }
    with atomic_path(outputs.model) as tmp:
        torch.save(best_model, tmp)
    run.memlog.publish(outputs.memory_log)
    return metrics


def end_epoch(run: Run, e: int, data: FoldData, tc: dict[str, Any]) -> tuple[dict, bool]:
    """Validate after epoch ``e``, step the schedule, update history/best/patience."""
    prog, metric = run.prog, tc["best_metric"]
    t0 = time.time()
    # a micro-batch that fits training fits evaluation (no stored activations)
    eval_batch = min(prog.eval_batch_size, prog.micro_batch_size)
    val_loss, probs, prog.eval_batch_size = evaluate(
        run.model, data.val, run.device, eval_batch, run.amp, run.memlog
    )
    if not np.all(np.isfinite(probs)):
        raise TrainingFailed(
            f"epoch {e} produced non-finite predictions (training diverged: lower train.lr or "
            "set train.use_amp: false)"
        )
    m = binary_metrics(data.val.labels, probs)
    lr = run.optimizer.param_groups[0]["lr"]
    if run.scheduler is not None:
        run.scheduler.step()
    value = float(val_loss if metric == "val_loss" else m[metric])
    row = {
        "epoch": e,
        "train_loss": prog.loss_sum / max(prog.samples, 1),
        "val_loss": val_loss,
        **{k: m[k] for k in HISTORY_COLUMNS if k in m},
        "lr": lr,
        "micro_batch_size": prog.micro_batch_size,
        "seconds": round(prog.seconds + time.time() - t0, 3),
    }
    prog.history.append(row)
    improved = not prog.best or is_better(metric, value, prog.best["value"])
    if improved:
        prog.best = {
            "epoch": e,
            "value": value,
            "val_loss": val_loss,
            "metrics": m,
            "probs": probs.tolist(),
        }
        prog.best_state = {
            k: v.detach().to("cpu", copy=True) for k, v in run.model.state_dict().items()
        }
        prog.bad_epochs = 0
    else:
        prog.bad_epochs += 1
    prog.stopped_early = bool(tc["patience"]) and prog.bad_epochs >= tc["patience"]
    prog.epoch, prog.batch_in_epoch, prog.loss_sum, prog.samples, prog.seconds = e, 0, 0.0, 0, 0.0
    return row, improved


def fit_fold(
    inputs: FoldInputs,
    outputs: FoldOutputs,
    fold: int,
    model_cfg: dict | None,
    train_cfg: dict | None,
    memory_cfg: dict | None,
    checkpoint_dir: str | Path,
    *,
    runtime_min: float | None = None,
    threads: int | None = None,
    micro_batch_size: int | None = None,
    device: str | None = None,
    started_at: float | None = None,
) -> dict[str, Any]:
    """Train fold ``fold`` (resuming when possible) and publish its outputs; returns the metrics.

    ``micro_batch_size`` is only the starting micro-batch (default: the batch size); a resumed
    run continues with the checkpoint's. ``runtime_min`` is the job's time budget (the rule's
    ``runtime`` resource), counted from ``started_at`` (default: this process's start).
    Raises :class:`TrainingInterrupted` after checkpointing on SIGTERM/SIGUSR1 or at the budget.
    """
    model_cfg = merge_config("model", DEFAULT_MODEL, model_cfg)
    tc = merge_config("train", DEFAULT_TRAIN, train_cfg)
    if tc["best_metric"] not in BEST_METRICS:
        raise ValueError(f"train.best_metric: {tc['best_metric']!r} is not one of {BEST_METRICS}")
    if tc["seed"] < 0:
        raise ValueError(f"train.seed: {tc['seed']} must be >= 0")
    policy = MemoryPolicy.from_config(memory_cfg)
    # handlers first: a signal during set-up must still end in a checkpoint, not a dead process
    with ckpt.StopControl(runtime_min, tc["time_margin_s"], started_at) as stop:
        if threads:
            torch.set_num_threads(int(threads))
        dev = pick_device(device)
        ckpt_dir = Path(checkpoint_dir)
        data = load_fold(**dataclasses.asdict(inputs), fold=fold)
        files = dataclasses.asdict(inputs) | (
            {"weights": model_cfg["weights"]} if model_cfg["weights"] else {}
        )
        fp = ckpt.fingerprint(fold, model_cfg, tc, files)
        decision = ckpt.choose_resume(ckpt_dir, fp)
        log.info(f"fold {fold}: {decision.reason}")

        seed = int(np.random.SeedSequence([tc["seed"], fold]).generate_state(1)[0])
        torch.manual_seed(seed)
        np.random.seed(seed)
        model = build_model(model_cfg).to(dev)
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=tc["lr"], weight_decay=tc["weight_decay"]
        )
        amp, bs = bool(tc["use_amp"]), tc["batch_size"]
        run = Run(
            model=model,
            optimizer=optimizer,
            scheduler=make_scheduler(optimizer, tc),
            scaler=torch.amp.GradScaler("cuda") if amp and dev.type == "cuda" else None,
            device=dev,
            amp=amp,
            loss_weights=class_weights(data.train.labels, tc["class_weights"]).to(dev),
            policy=policy,
            memlog=MemoryLog(ckpt_dir / ckpt.TIMELINE, dev, context={"fold": fold}),
            prog=Progress(micro_batch_size=min(micro_batch_size or bs, bs), eval_batch_size=bs),
        )
        if decision.state is not None:
            restore_checkpoint(run, decision.state)
        prog = run.prog
        log.info(
            f"fold {fold}: {model_cfg['name']} ({count_parameters(model)} params) on {dev}, "
            f"{torch.get_num_threads()} threads; {len(data.train)} train clips ({data.n_aug} "
            f"augmented), {len(data.val)} val; batch {bs}, micro-batch {prog.micro_batch_size}, "
            f"amp {amp}"
        )
        run.memlog.event(
            "stage_start",
            resumed=decision.state is not None,
            reason=decision.reason,
            epoch=prog.epoch,
            batch=prog.batch_in_epoch,
            micro_batch_size=prog.micro_batch_size,
        )

        def save(path: Path | None = None, complete: bool = False) -> None:
            ckpt.save_checkpoint(path or ckpt_dir / ckpt.LATEST, make_checkpoint(run, fp, complete))

        policy.setup_done()
        try:
            _epochs(run, tc, fold, data, stop, save, ckpt_dir, model_cfg, fp)
            run.memlog.event(
                "fold_end",
                epochs=prog.epoch,
                best_epoch=prog.best["epoch"],
                micro_batch_size=prog.micro_batch_size,
                skipped=prog.skipped,
            )
            metrics = publish(outputs, run, fold, data, model_cfg, tc["best_metric"])
            save(complete=True)
            log.info(
                f"fold {fold} done: best epoch {prog.best['epoch']}, {tc['best_metric']} "
                f"{prog.best['value']:.4f}; {run.memlog.summary()}"
            )
            return metrics
        except TrainingInterrupted as exc:
            at = {"epoch": prog.epoch + 1, "batch": prog.batch_in_epoch}
            run.memlog.event(
                "interrupted", reason=str(exc), micro_batch_size=prog.micro_batch_size, **at
            )
            log.warning(
                f"fold {fold}: {exc}; checkpoint written at epoch {at['epoch']} batch "
                f"{at['batch']}, rerun to resume (exit {EXIT_RESUMABLE}); {run.memlog.summary()}"
            )
            raise
        finally:
            policy.teardown()


def _epochs(
    run: Run,
    tc: dict,
    fold: int,
    data: FoldData,
    stop: ckpt.StopControl,
    save: Callable[..., None],
    ckpt_dir: Path,
    model_cfg: dict,
    fp: str,
) -> None:
    """The epoch loop of :func:`fit_fold`; checkpoints at every epoch end and on a stop."""
    prog, policy = run.prog, run.policy
    while prog.epoch < tc["epochs"] and not prog.stopped_early:
        e = prog.epoch + 1
        batches = epoch_batches(
            data.train.labels, tc["batch_size"], tc["seed"], fold, e, tc["sampler"]
        )
        reason = train_one_epoch(
            run,
            data.train,
            batches,
            stop,
            save,
            tc["num_workers"],
            tc["checkpoint_every_n_batches"],
        )
        if reason:
            save()
            raise TrainingInterrupted(reason)
        if prog.skipped > policy.max_skip_fraction * prog.batches:
            run.memlog.event("failed", skipped=prog.skipped, batches=prog.batches)
            raise TrainingFailed(
                f"fold {fold}: {prog.skipped} of {prog.batches} batches skipped after OOM at "
                f"micro-batch {prog.micro_batch_size} (> memory.max_skip_fraction "
                f"{policy.max_skip_fraction}); lower data.size/num_frames or use a smaller model"
            )
        row, improved = end_epoch(run, e, data, tc)
        save(ckpt.epoch_path(ckpt_dir, e))
        ckpt.link_or_copy(ckpt.epoch_path(ckpt_dir, e), ckpt_dir / ckpt.LATEST)
        if improved:
            best = {
                "model_state": prog.best_state,
                "model": model_cfg,
                "epoch": e,
                "metric": tc["best_metric"],
                "value": prog.best["value"],
                "fingerprint": fp,
            }
            ckpt.save_checkpoint(ckpt_dir / ckpt.BEST, best)
        ckpt.prune_epoch_checkpoints(ckpt_dir, tc["keep_epoch_checkpoints"])
        run.memlog.event(
            "epoch_end",
            epoch=e,
            micro_batch_size=prog.micro_batch_size,
            val_loss=row["val_loss"],
            improved=improved,
        )
        value = row[tc["best_metric"]]
        log.info(
            f"epoch {e}/{tc['epochs']}: train loss {row['train_loss']:.4f}, val loss "
            f"{row['val_loss']:.4f}, {tc['best_metric']} {value:.4f}{' (best)' if improved else ''}"
            f", lr {row['lr']:.2e}, {row['seconds']:.1f} s"
        )
        aggressive_gc()
        if prog.stopped_early:
            log.info("early stopping: %d epochs without improvement", tc["patience"])
        reason = stop.reason()
        if reason:
            raise TrainingInterrupted(reason)


def run_fold(*args: Any, **kwargs: Any) -> int:
    """:func:`fit_fold` as a job: 0 when done, :data:`EXIT_RESUMABLE` after a deliberate stop."""
    try:
        fit_fold(*args, **kwargs)
    except TrainingInterrupted:
        return EXIT_RESUMABLE
    finally:
        aggressive_gc()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Train one fold outside Snakemake: same function and artifacts as the train rule."""
    import yaml

    from fvc.log import setup_logging

    p = argparse.ArgumentParser(prog="python -m fvc.train", description=main.__doc__)
    p.add_argument("--config", required=True, help="YAML/JSON with model/train/memory sections")
    p.add_argument("--fold", type=int, required=True)
    for name in ("clips", "index", "splits", "aug-clips", "aug-manifest"):
        p.add_argument(f"--{name}", required=True, help="input artifact (docs/artifacts.md)")
    p.add_argument("--out-dir", required=True, help="where metrics.json etc. are published")
    p.add_argument("--checkpoint-dir", required=True, help="resume state directory")
    p.add_argument("--runtime-min", type=float, help="time budget in minutes (resources.runtime)")
    p.add_argument("--threads", type=int, help="torch threads")
    p.add_argument("--micro-batch-size", type=int, help="starting micro-batch (default: batch)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--log", help="log file (appended) besides stderr")
    a = p.parse_args(argv)
    setup_logging(a.log)
    with open(a.config) as fh:
        cfg = yaml.safe_load(fh) or {}
    return run_fold(
        FoldInputs(a.clips, a.index, a.splits, a.aug_clips, a.aug_manifest),
        FoldOutputs.in_dir(a.out_dir),
        a.fold,
        cfg.get("model"),
        cfg.get("train"),
        cfg.get("memory"),
        a.checkpoint_dir,
        runtime_min=a.runtime_min,
        threads=a.threads,
        micro_batch_size=a.micro_batch_size,
        device=a.device,
    )


if __name__ == "__main__":
    sys.exit(main())
