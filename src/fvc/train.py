"""Training of one fold: ``train_one_epoch``, ``evaluate`` and ``fit_fold`` (plain functions).

What makes it robust (issue 3):

- **OOM recovery** (:func:`fvc.step.robust_step`): a failed step is rolled back (gradients,
  BatchNorm buffers, RNG), memory is collected outside the ``except`` block, the step is
  retried, then the micro-batch is halved with gradient accumulation (same effective batch, same
  loss normalisation) down to ``memory.min_batch_size``, then the batch is skipped (counted; the
  fold fails beyond ``memory.max_skip_fraction``). The reduced size is kept and checkpointed.
- **Exact resume**: the checkpoint is one explicit dict (:func:`fvc.fold_state.make_checkpoint`)
  with model, optimizer, scheduler, scaler, position in the epoch, RNG states and history; the
  epoch's batch order is a pure function of (seed, fold, epoch), so a resumed run on CPU ends
  with bit-identical weights.
- **Stopping on purpose**: SIGTERM/SIGUSR1 or the time budget -> finish the step, checkpoint,
  exit with :data:`EXIT_RESUMABLE` so Snakemake's retry resumes.

Layout: this module is the loop; :mod:`fvc.step` the optimizer step, :mod:`fvc.fold_state` the
containers, checkpoint dict, epoch bookkeeping and published outputs (re-exported here), and
:mod:`fvc.cli` the command line: ``python -m fvc.train --help`` runs one fold outside Snakemake
(the fault tests use it).
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fvc import checkpoint as ckpt
from fvc.datasets import (
    ClipSet,
    FoldData,
    collate_batch,
    epoch_batches,
    load_fold,
    to_model_input,
    video_scores,
)
from fvc.fold_state import (
    HISTORY_COLUMNS,
    FoldInputs,
    FoldOutputs,
    Progress,
    Run,
    best_model,
    fold_config,
    make_checkpoint,
    new_run,
    publish,
    record_epoch,
    restore_checkpoint,
)
from fvc.memory import MemoryLog, MemoryPolicy, aggressive_gc, is_oom_error
from fvc.models import (
    WeightsError,
    backbone_frozen,
    build_model,
    count_parameters,
    fetch_weights,
    input_normalization,
    set_backbone_frozen,
)
from fvc.step import autocast, first_line, robust_step, train_step

__all__ = [  # the loop, and what callers imported from here before the split
    "EXIT_RESUMABLE", "HISTORY_COLUMNS", "FoldInputs", "FoldOutputs", "MemoryLog", "Progress",
    "Run", "TrainingFailed", "TrainingInterrupted", "end_epoch", "evaluate", "fit_fold", "main",
    "pick_device", "robust_step", "run_fold", "train_one_epoch", "train_step",
]  # fmt: skip

log = logging.getLogger("fvc.train")  # not __name__: "__main__" under python -m fvc.train

#: Exit status after a deliberate stop with a checkpoint written (EX_TEMPFAIL: "try again").
EXIT_RESUMABLE = 75


class TrainingInterrupted(Exception):
    """Training stopped on purpose (signal or time budget) after writing a checkpoint."""


class TrainingFailed(RuntimeError):
    """The fold cannot produce a valid model (too many skipped batches, diverged)."""


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
    norm: tuple[Any, Any] | None = None,
) -> tuple[float, np.ndarray, int]:
    """Mean cross-entropy (over all windows) and P(fake) per video, in ``data`` order.

    Every window of every video is scored (``data.clips_per_video``); a video's P(fake) is the
    mean of its windows' (:func:`fvc.datasets.video_scores`). Halves its batch on OOM (down to
    1) and returns the batch size that worked, so the next epoch starts there.
    """
    model.eval()
    items, windows = data.window_items()  # clips_per_video hook: every (video, window) pair
    n = len(items)
    probs, loss_sum, i = np.empty(n, dtype=np.float64), 0.0, 0
    while i < n:
        error = None
        try:
            x, y = data.get_batch(items[i : i + batch_size], windows[i : i + batch_size])
            with autocast(device, amp):
                logits = model(to_model_input(x, device, norm))
            logits = logits.float()
            loss_sum += float(F.cross_entropy(logits, y.to(device), reduction="sum"))
            probs[i : i + len(y)] = torch.softmax(logits, 1)[:, 1].cpu().numpy()
            i += len(y)
            continue
        except Exception as exc:
            if not is_oom_error(exc) or batch_size == 1:
                raise
            error = first_line(exc)
        aggressive_gc()
        batch_size //= 2
        log.warning("OOM during evaluation (%s); eval batch -> %d", error, batch_size)
        if memlog is not None:
            memlog.event("eval_oom", error=error, eval_batch_size=batch_size)
    return loss_sum / max(n, 1), video_scores(probs, items), batch_size


def pick_device(device: str | None = None) -> torch.device:
    """CUDA when available (a GPU job), else CPU; ``device`` overrides."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def end_epoch(run: Run, e: int, data: FoldData, tc: dict[str, Any]) -> tuple[dict, bool]:
    """Validate after epoch ``e``, step the schedule, update history/best/patience."""
    prog = run.prog
    t0 = time.time()
    # a micro-batch that fits training fits evaluation (no stored activations)
    eval_batch = min(prog.eval_batch_size, prog.micro_batch_size)
    val_loss, probs, prog.eval_batch_size = evaluate(
        run.model, data.val, run.device, eval_batch, run.amp, run.memlog, run.norm
    )
    if not np.all(np.isfinite(probs)):
        raise TrainingFailed(
            f"epoch {e} produced non-finite predictions (training diverged: lower train.lr or "
            "set train.use_amp: false)"
        )
    lr = run.optimizer.param_groups[0]["lr"]
    if run.scheduler is not None:
        run.scheduler.step()
    return record_epoch(run, e, data.val.labels, val_loss, probs, lr, tc, t0)


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
    model_cfg, tc = fold_config(model_cfg, train_cfg)
    # model.weights first: an offline node without cached torchvision weights (or a missing
    # file) stops here with one line (WeightsError), before anything is written
    weights_file = fetch_weights(model_cfg)
    policy = MemoryPolicy.from_config(memory_cfg)
    # handlers first: a signal during set-up must still end in a checkpoint, not a dead process
    with ckpt.StopControl(runtime_min, tc["time_margin_s"], started_at) as stop:
        if threads:
            torch.set_num_threads(int(threads))
        dev = pick_device(device)
        ckpt_dir = Path(checkpoint_dir)
        data = load_fold(**dataclasses.asdict(inputs), fold=fold)
        files = dataclasses.asdict(inputs) | ({"weights": weights_file} if weights_file else {})
        fp = ckpt.fingerprint(fold, model_cfg, tc, files)
        decision = ckpt.choose_resume(ckpt_dir, fp)
        log.info(f"fold {fold}: {decision.reason}")

        seed = int(np.random.SeedSequence([tc["seed"], fold]).generate_state(1)[0])
        torch.manual_seed(seed)
        np.random.seed(seed)
        model = build_model(model_cfg).to(dev)
        memlog = MemoryLog(ckpt_dir / ckpt.TIMELINE, dev, context={"fold": fold})
        run = new_run(model, tc, dev, data.train.labels, policy, memlog, micro_batch_size)
        run.norm = input_normalization(model_cfg)
        if decision.state is not None:
            restore_checkpoint(run, decision.state)
        prog = run.prog
        log.info(
            f"fold {fold}: {model_cfg['name']} ({count_parameters(model)} params) on {dev}, "
            f"{torch.get_num_threads()} threads; {len(data.train)} train clips ({data.n_aug} "
            f"augmented), {len(data.val)} val; batch {tc['batch_size']}, micro-batch "
            f"{prog.micro_batch_size}, amp {run.amp}"
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
        # a function of the epoch: a resumed run freezes exactly as the interrupted one did
        if tc["freeze_backbone_epochs"]:
            set_backbone_frozen(run.model, backbone_frozen(tc, e))
        batches = epoch_batches(
            data.train.labels, tc["batch_size"], tc["seed"], fold, e, tc["sampler"]
        )
        data.train.set_epoch(tc["seed"], fold, e)  # clips_per_video: this epoch's windows
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
            best = best_model(prog, model_cfg, tc["best_metric"]) | {"fingerprint": fp}
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
    except WeightsError as exc:  # one line (URL and where to put the file), nothing written
        log.error("%s", exc)
        return 1
    finally:
        aggressive_gc()
    return 0


def main(argv: list[str] | None = None) -> int:
    """The command line of :mod:`fvc.cli` (imported late: it imports this module)."""
    from fvc.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
