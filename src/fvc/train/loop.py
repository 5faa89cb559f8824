"""The training loop: ``train_one_epoch``, ``evaluate`` and ``fit_fold`` (plain functions).

Read top to bottom, in the shape of torchvision's reference scripts: :func:`train_one_epoch`
(the batches of one epoch, each one :func:`fvc.train.step.robust_step`), :func:`evaluate`
(P(fake) per video) and :func:`end_epoch` (validation and the epoch's bookkeeping) make an
epoch; :func:`_start` (device, data, fingerprint, seeded model, resume decision) and
:func:`_epochs` (the epochs, a checkpoint at each end) are :func:`fit_fold`'s two halves, which
then publishes the target's outputs; :func:`run_fold` turns it into a job's exit status. The
checkpoint dict is :mod:`fvc.train.state`; checkpoint files, the fingerprint and the resume
decision :mod:`fvc.train.resume`; what a fold and the final model publish
:mod:`fvc.train.publish`.

An epoch's batch order is a pure function of (seed, stream, epoch), so a resumed run on the
CPU ends with bit-identical weights. SIGTERM/SIGUSR1 or the time budget finish the step,
checkpoint and exit with :data:`~fvc.train.stop.EXIT_RESUMABLE`, as does an OOM inside the
optimizer update (without saving the half-updated state: the rerun resumes from the last
checkpoint).
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fvc import io
from fvc.config import ConfigError, MemoryConfig, ModelConfig, TrainConfig, default
from fvc.datasets import (
    ClipSet,
    FoldData,
    FoldInputs,
    InputNorm,
    collate_batch,
    epoch_batches,
    input_norm,
    load_fold,
    to_model_input,
    video_scores,
)
from fvc.devices import claim_gpu_slot, pick_device
from fvc.memory import MemoryLog, MemoryPolicy, aggressive_gc
from fvc.models import (
    WeightsError,
    backbone_frozen,
    build_model,
    count_parameters,
    fetch_weights,
    input_normalization,
    set_backbone_frozen,
)
from fvc.train import resume
from fvc.train.precision import autocast
from fvc.train.publish import Target, record_epoch
from fvc.train.state import (
    Run,
    check_checkpoint,
    flush_loss,
    make_checkpoint,
    new_run,
    restore_checkpoint,
)
from fvc.train.step import Rollback, StepStateLost, call_with_oom_recovery, robust_step
from fvc.train.stop import EXIT_RESUMABLE, StopControl, TrainingInterrupted, ignore_stop_signals

log = logging.getLogger(__name__)


class TrainingFailed(RuntimeError):
    """The run cannot produce a valid model (too many skipped batches, diverged)."""


def train_one_epoch(
    run: Run,
    data: ClipSet,
    batches: list[np.ndarray],
    stop: StopControl,
    checkpointer: resume.Checkpointer | None = None,
    num_workers: int = default("train", "num_workers"),
) -> str | None:
    """Train the epoch's batches from ``pos.batch_in_epoch`` on; returns a stop reason or None.

    ``checkpointer`` writes ``latest_checkpoint.pt`` in the background when its cadence is
    due. Progress lines are logged at each quarter of the epoch (and every 30 s), readable in a
    plain log file; they are the only points where a step waits for the device (the loss).
    """
    pos = run.pos
    run.model.train()
    loader = torch.utils.data.DataLoader(
        data,
        batch_sampler=[b.tolist() for b in batches[pos.batch_in_epoch :]],
        num_workers=num_workers,
        collate_fn=collate_batch,
        generator=torch.Generator(),  # keeps the global RNG (dropout) untouched by the loader
        worker_init_fn=ignore_stop_signals if num_workers else None,
        pin_memory=run.device.type == "cuda",  # then inputs and labels move non_blocking
    )
    rollback = Rollback(run)
    n, last_log, t0 = len(batches), time.time(), time.time()
    for x, y in loader:
        loss = robust_step(run, x, y, rollback)
        pos.batch_in_epoch += 1
        pos.step += 1
        if loss is None:
            pos.skipped += 1
        else:
            run.pending_loss += loss.double() * len(y)
            pos.samples += len(y)
        run.policy.after_batch(pos.step)
        now = time.time()
        pos.seconds, t0 = pos.seconds + now - t0, now
        b = pos.batch_in_epoch
        if now - last_log > 30 or 4 * b // n != 4 * (b - 1) // n:
            last_log = now
            flush_loss(run)
            bar, loss_avg = "#" * round(20 * b / n), pos.loss_sum / max(pos.samples, 1)
            log.info(
                f"epoch {pos.epoch + 1} [{bar:<20}] {100 * b / n:3.0f}% {b}/{n} batches, "
                f"loss {loss_avg:.4f}, micro-batch {pos.micro_batch_size}"
            )
        reason = stop.reason()
        if reason:
            return reason
        if checkpointer is not None and checkpointer.due(b, n):
            checkpointer.save_background()
    return None


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: ClipSet,
    norm: InputNorm,
    batch_size: int,
    precision: str = default("train", "precision"),
    memlog: MemoryLog | None = None,
    policy: MemoryPolicy | None = None,
) -> tuple[float, np.ndarray, int]:
    """Mean cross-entropy (over all windows) and P(fake) per video, in ``data`` order.

    Every window of every video is scored (``data.clips_per_video``); a video's P(fake) is the
    mean of its windows' (:func:`fvc.datasets.video_scores`). An OOM goes through the training
    step's policy (:func:`fvc.train.step.call_with_oom_recovery`: retry, then halve down to
    ``memory.min_batch_size``); no video is ever skipped, so an OOM at the minimum is an error.
    Returns the batch size that worked, so the next epoch starts there. Results stay on the
    device until the end (one sync).
    """
    policy = policy or MemoryPolicy()
    model.eval()
    device = norm.mean.device
    items, windows = data.window_items()  # clips_per_video: every (video, window) pair
    n = len(items)
    probs = torch.empty(n, dtype=torch.float32, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)

    def score(i: int, size: int) -> int:
        x, y = data.get_batch(items[i : i + size], windows[i : i + size])
        with autocast(device, precision):
            logits = model(to_model_input(x, norm))
        logits = logits.float()
        y = y.to(device, non_blocking=True)
        nonlocal loss_sum
        loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
        probs[i : i + len(y)] = torch.softmax(logits, 1)[:, 1]
        return len(y)

    i = 0
    while i < n:
        done, batch_size = call_with_oom_recovery(
            lambda size, i=i: score(i, size),
            batch_size,
            policy,
            memlog=memlog,
            where={"window": i},
            phase="eval",
            size_key="eval_batch_size",
        )
        if done is None:
            raise MemoryError(
                f"out of memory scoring windows {i}.. at the minimum batch {batch_size} "
                "(memory.min_batch_size); lower data.size/num_frames or use a smaller model"
            )
        i += done
    probs_np = probs.double().cpu().numpy()
    return float(loss_sum) / max(n, 1), video_scores(probs_np, items), batch_size


def end_epoch(
    run: Run, e: int, data: FoldData, train: TrainConfig, validates: bool = True
) -> tuple[dict, bool]:
    """Validate after epoch ``e`` (when the target validates), step the schedule, book the
    epoch (:func:`fvc.train.publish.record_epoch`: history, best, patience)."""
    pos, t0, val = run.pos, time.time(), None
    lr = run.optimizer.param_groups[0]["lr"]
    if validates and len(data.val):
        # a micro-batch that fits training fits evaluation (no stored activations)
        eval_batch = min(pos.eval_batch_size, pos.micro_batch_size)
        val_loss, probs, pos.eval_batch_size = evaluate(
            run.model, data.val, run.norm, eval_batch, run.precision, run.memlog, run.policy
        )
        if not np.all(np.isfinite(probs)):
            raise TrainingFailed(
                f"epoch {e} produced non-finite predictions (training diverged: lower train.lr "
                "or set train.precision: off)"
            )
        val = (data.val.labels, val_loss, probs)
    if run.scheduler is not None:
        run.scheduler.step()
    return record_epoch(run, e, lr, train, t0, val)


def _start(
    target: Target,
    inputs: FoldInputs,
    model_cfg: ModelConfig,
    train: TrainConfig,
    policy: MemoryPolicy,
    ckpt_dir: Path,
    weights_file: Path | None,
    *,
    threads: int | None,
    device: str | None,
    micro_batch_size: int | None,
    retry: bool = False,
) -> tuple[FoldData, Run, str]:
    """Set-up of :func:`fit_fold`: device, data, fingerprint, seeded model, resume decision and
    the :class:`~fvc.train.state.Run` (restored from the checkpoint when resuming), logged."""
    if threads:
        torch.set_num_threads(int(threads))
    dev = pick_device(device or train.device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        torch.backends.cudnn.benchmark = True  # clip shapes are fixed within a run
    data = load_fold(inputs, fold=target.held_out)
    files = dataclasses.asdict(inputs) | ({"weights": weights_file} if weights_file else {})
    # a changed epoch limit must not resume past it (a fold's fingerprint has none)
    limit = {"stop_after_epochs": target.epoch_limit} if target.epoch_limit else {}
    fp = resume.fingerprint(target.stream, model_cfg.as_dict(), train.as_dict() | limit, files)
    seed = int(np.random.SeedSequence([train.seed, target.stream]).generate_state(1)[0])
    torch.manual_seed(seed)
    np.random.seed(seed)
    model = build_model(model_cfg).to(dev)
    decision = resume.choose_resume(ckpt_dir, fp, lambda s: check_checkpoint(s, model), retry)
    log.info(f"{target.name}: {decision.reason}")
    # a writer killed mid-write (a checkpoint, an output) left its temporary file behind
    outputs = {Path(p).parent for p in dataclasses.asdict(target.outputs).values()}
    for folder in sorted({ckpt_dir, *outputs}):
        io.remove_stale_temps(folder)
    memlog = MemoryLog(ckpt_dir / resume.TIMELINE, dev, context={"fold": target.held_out})
    # the input mean/std of model.weights (torchvision weights' own), on the device once
    norm = input_norm(dev, *input_normalization(model_cfg))
    run = new_run(model, train, dev, data.train.labels, policy, memlog, norm, micro_batch_size)
    if decision.state is not None:
        restore_checkpoint(run, decision.state)
    pos = run.pos
    log.info(
        f"{target.name}: {model_cfg.name} ({count_parameters(model)} params) on {dev}, "
        f"{torch.get_num_threads()} threads; {len(data.train)} train clips ({data.n_aug} "
        f"augmented), {len(data.val)} val; batch {train.batch_size}, micro-batch "
        f"{pos.micro_batch_size}, precision {run.precision}"
    )
    memlog.event(
        "stage_start",
        resumed=decision.state is not None,
        reason=decision.reason,
        epoch=pos.epoch,
        batch=pos.batch_in_epoch,
        micro_batch_size=pos.micro_batch_size,
        device=str(dev),
        precision=run.precision,
    )
    return data, run, fp


def _epochs(
    run: Run,
    train: TrainConfig,
    target: Target,
    data: FoldData,
    stop: StopControl,
    checkpointer: resume.Checkpointer,
) -> None:
    """The epoch loop of :func:`fit_fold`; checkpoints at every epoch end and on a stop."""
    pos, policy, ckpt_dir = run.pos, run.policy, checkpointer.dir
    last_epoch = target.epoch_limit or train.epochs
    while pos.epoch < last_epoch and not pos.stopped_early:
        e = pos.epoch + 1
        # a function of the epoch: a resumed run freezes exactly as the interrupted one did
        if train.freeze_backbone_epochs:
            set_backbone_frozen(run.model, backbone_frozen(train, e))
        batches = epoch_batches(
            data.train.labels, train.batch_size, train.seed, target.stream, e, train.sampler
        )
        data.train.set_epoch(train.seed, target.stream, e)  # clips_per_video: the windows
        reason = train_one_epoch(run, data.train, batches, stop, checkpointer, train.num_workers)
        if reason:
            checkpointer.save()
            raise TrainingInterrupted(reason)
        if pos.skipped > policy.max_skip_fraction * pos.step:
            run.memlog.event("failed", skipped=pos.skipped, batches=pos.step)
            raise TrainingFailed(
                f"{target.name}: {pos.skipped} of {pos.step} batches skipped after OOM at "
                f"micro-batch {pos.micro_batch_size} (> memory.max_skip_fraction "
                f"{policy.max_skip_fraction}); lower data.size/num_frames or use a smaller model"
            )
        row, improved = end_epoch(run, e, data, train, target.validates)
        checkpointer.save(resume.epoch_path(ckpt_dir, e))
        resume.link_or_copy(resume.epoch_path(ckpt_dir, e), ckpt_dir / resume.LATEST)
        resume.prune_epoch_checkpoints(ckpt_dir, train.keep_epoch_checkpoints, pos.best["epoch"])
        run.memlog.event(
            "epoch_end",
            epoch=e,
            micro_batch_size=pos.micro_batch_size,
            val_loss=row.get("val_loss"),
            improved=improved,
        )
        metric = train.best_metric
        val = (
            f", val loss {row['val_loss']:.4f}, {metric} {row[metric]:.4f}"
            f"{' (best)' if improved else ''}"
            if "val_loss" in row
            else ""
        )
        log.info(
            f"epoch {e}/{last_epoch}: train loss {row['train_loss']:.4f}{val}, lr {row['lr']:.2e}"
            f", {row['seconds']:.1f} s"
        )
        aggressive_gc()
        if pos.stopped_early:
            log.info("early stopping: %d epochs without improvement", train.patience)
        reason = stop.reason()
        if reason:
            raise TrainingInterrupted(reason)


def fit_fold(
    target: Target,
    inputs: FoldInputs,
    model_cfg: ModelConfig | dict | None,
    train_cfg: TrainConfig | dict | None,
    memory_cfg: MemoryConfig | dict | None,
    checkpoint_dir: str | Path,
    *,
    runtime_min: float | None = None,
    threads: int | None = None,
    micro_batch_size: int | None = None,
    device: str | None = None,
    started_at: float | None = None,
    attempt: int = 1,
) -> dict[str, Any]:
    """Train ``target`` (resuming when possible) and publish its outputs; returns the metrics.

    ``target`` is a :class:`~fvc.train.publish.FoldTarget` (a CV fold) or a
    :class:`~fvc.train.publish.FinalTarget` (every video, no validation, a fixed number of
    epochs). ``device`` overrides ``train.device``. ``micro_batch_size`` is only the starting
    micro-batch (default: the batch size); a resumed run continues with the checkpoint's.
    ``runtime_min`` is the job's time budget (the rule's ``runtime`` resource), counted from
    ``started_at`` (default: this process's start). ``attempt`` > 1 (the scheduler's retry,
    Snakemake's ``attempt``) publishes a run that already completed again instead of training
    it afresh. Raises :class:`TrainingInterrupted` on
    SIGTERM/SIGUSR1 or at the budget (after checkpointing) and after an OOM inside the
    optimizer update (without saving the half-updated state).
    """
    model_cfg, train = ModelConfig.of(model_cfg), TrainConfig.of(train_cfg)
    # model.weights first: an offline node without cached torchvision weights (or a missing
    # file) stops here with one line (WeightsError), before anything is written
    weights_file = fetch_weights(model_cfg)
    policy = MemoryPolicy.of(memory_cfg)
    # handlers first: a signal during set-up must still end in a checkpoint, not a dead process
    with StopControl(runtime_min, train.time_margin_s, started_at) as stop:
        ckpt_dir = Path(checkpoint_dir)
        data, run, fp = _start(
            target,
            inputs,
            model_cfg,
            train,
            policy,
            ckpt_dir,
            weights_file,
            threads=threads,
            device=device,
            micro_batch_size=micro_batch_size,
            retry=attempt > 1,
        )
        pos, memlog = run.pos, run.memlog
        checkpointer = resume.Checkpointer(
            ckpt_dir,
            lambda complete: make_checkpoint(run, fp, complete),
            train.checkpoint_every_n_batches,
            train.checkpoint_every_s,
            memlog,
        )
        policy.setup_done()
        try:
            _epochs(run, train, target, data, stop, checkpointer)
            memlog.event(
                "fold_end",
                epochs=pos.epoch,
                best_epoch=pos.best["epoch"],
                micro_batch_size=pos.micro_batch_size,
                skipped=pos.skipped,
                background_checkpoints=checkpointer.background_writes,
                checkpoint_blocking_s=round(checkpointer.blocking_s, 3),
            )
            metrics = target.publish(run, data, model_cfg, train, ckpt_dir)
            checkpointer.save(complete=True)
            log.info(f"{target.name} done: {target.done_line(run, train)}; {memlog.summary()}")
            return metrics
        except TrainingInterrupted as exc:
            at = {"epoch": pos.epoch + 1, "batch": pos.batch_in_epoch}
            memlog.event(
                "interrupted", reason=str(exc), micro_batch_size=pos.micro_batch_size, **at
            )
            log.warning(
                f"{target.name}: {exc}; checkpoint written at epoch {at['epoch']} batch "
                f"{at['batch']}, rerun to resume (exit {EXIT_RESUMABLE}); {memlog.summary()}"
            )
            raise
        except StepStateLost as exc:
            at = {"epoch": pos.epoch + 1, "batch": pos.batch_in_epoch + 1}
            checkpointer.wait()  # an earlier, consistent state may still be on its way to disk
            memlog.event(
                "step_state_lost", error=str(exc), micro_batch_size=pos.micro_batch_size, **at
            )
            log.error(
                f"{target.name}: {exc} at epoch {at['epoch']} batch {at['batch']}: weights and "
                "optimizer state may be half-updated, so the step is not retried and this state "
                f"is not saved; rerun to resume from the last checkpoint in {ckpt_dir} (exit "
                f"{EXIT_RESUMABLE})"
            )
            raise TrainingInterrupted(str(exc)) from None
        finally:
            checkpointer.wait()
            policy.teardown()


def run_fold(*args: Any, **kwargs: Any) -> int:
    """:func:`fit_fold` (same arguments) as a job: 0 when done, :data:`EXIT_RESUMABLE` after a
    deliberate stop.

    Before anything initialises CUDA it claims a GPU slot for ``train.device`` auto/cuda when
    several GPUs are visible, also inside a SLURM allocation (:func:`fvc.devices.claim_gpu_slot`;
    a job given one GPU keeps it). A configuration error is one log line and exit status 2;
    unusable ``model.weights`` one line and status 1.
    """
    job = inspect.signature(fit_fold).bind(*args, **kwargs).arguments
    try:
        train = TrainConfig.of(job["train_cfg"])
        if (job.get("device") or train.device) in ("auto", "cuda"):
            claim_gpu_slot()
        fit_fold(*args, **kwargs)
    except TrainingInterrupted:
        return EXIT_RESUMABLE
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    except WeightsError as exc:  # one line (URL and where to put the file), nothing written
        log.error("%s", exc)
        return 1
    finally:
        aggressive_gc()
    return 0


def rule_arguments(smk: Any) -> dict[str, Any]:
    """The train and refit rules' job arguments of :func:`run_fold` from the script's
    ``snakemake`` object: the model section, the train and memory sections (the rule's params
    hold their result-affecting keys, ``snakemake.config`` the operational ones, which are
    kept out of the params so that changing one reruns nothing), the checkpoint directory, the
    time budget (``resources.runtime``, minutes), the thread count and Snakemake's attempt
    (``resources.attempt``: scripts see no attempt of their own)."""
    p, cfg = smk.params, smk.config
    return {
        "model_cfg": dict(p.model),
        "train_cfg": {**cfg["train"], **p.train},
        "memory_cfg": {**cfg["memory"], **p.memory},
        "checkpoint_dir": p.checkpoint_dir,
        "runtime_min": getattr(smk.resources, "runtime", None),
        "threads": smk.threads,
        "attempt": int(getattr(smk.resources, "attempt", 1)),
    }
