"""The state of one fold's training, kept apart from the loop in :mod:`fvc.train`.

- config: :func:`fold_config` (defaults and checks from the config schema; an unknown key is
  an error, not a silent default);
- the containers the loop functions share: :class:`Run` (model, optimizer, schedule, ...:
  built by :func:`new_run`) and :class:`Position` (where the fold stands: plain values only);
- the ONE checkpoint dict (:func:`make_checkpoint` / :func:`restore_checkpoint`);
- the end-of-epoch bookkeeping (history row, best epoch, patience: :func:`record_epoch`);
- the declared outputs of the train and refit rules (:class:`FoldOutputs`,
  :class:`FinalOutputs`, written by :func:`publish`).

No training maths here: this module decides what is remembered and what is published.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from fvc import checkpoint as ckpt
from fvc.datasets import FoldData, InputNorm, class_weights
from fvc.io import atomic_path, write_json, write_parquet, write_text
from fvc.memory import MemoryLog, MemoryPolicy
from fvc.metrics import binary_metrics, is_better
from fvc.models import param_groups, warmup_scheduler
from fvc.schema import ConfigError, check_section

log = logging.getLogger("fvc.train")  # one logger name for the whole training of a fold

HISTORY_COLUMNS = [
    "epoch", "train_loss", "val_loss", "accuracy", "balanced_accuracy", "f1", "roc_auc", "lr",
    "micro_batch_size", "seconds",
]  # fmt: skip
FINAL_HISTORY_COLUMNS = ["epoch", "train_loss", "lr", "micro_batch_size", "seconds"]


def fold_config(model_cfg: dict | None, train_cfg: dict | None) -> tuple[dict, dict]:
    """The complete ``model`` and ``train`` sections: the schema's defaults overlaid with the
    given values, checked as the schema says (:func:`fvc.schema.check_section`) before any work.

    ``train.use_amp`` (replaced by ``train.precision``) still works: ``true`` reads as
    ``precision: auto`` unless a precision is set, with a warning naming the new key.
    """
    given = dict(train_cfg or {})
    if "use_amp" in given:
        use_amp = given.pop("use_amp")
        if use_amp and given.get("precision", "off") == "off":
            given["precision"] = "auto"
        log.warning(
            "train.use_amp is deprecated: set train.precision (off, bf16, fp16 or auto); "
            "use_amp: %s read as precision: %s",
            use_amp,
            given.get("precision", "off"),
        )
    return check_section("model", model_cfg), check_section("train", given)


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
class FinalOutputs:
    """The refit rule's declared outputs (docs/artifacts.md): the final model, no validation."""

    model: str | Path
    history: str | Path
    memory_log: str | Path

    @classmethod
    def in_dir(cls, out_dir: str | Path) -> FinalOutputs:
        d = Path(out_dir)
        return cls(d / "model.pt", d / "history.csv", d / "memory.jsonl")


@dataclass
class Position:
    """Where a fold stands. Every field is a key of the checkpoint dict (plain Python values)."""

    micro_batch_size: int  # may shrink after OOM; kept for the rest of the fold
    eval_batch_size: int
    epoch: int = 0  # completed epochs
    batch_in_epoch: int = 0  # batches of epoch ``epoch + 1`` already consumed
    step: int = 0  # batches consumed in this fold (GC cadence, skip fraction)
    loss_sum: float = 0.0  # sum of per-sample train losses in the current epoch
    samples: int = 0
    seconds: float = 0.0  # time spent in the current epoch (across attempts)
    skipped: int = 0  # batches skipped after OOM at the minimum micro-batch
    bad_epochs: int = 0  # epochs without improvement (early stopping)
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    # epoch, value, val_loss, metrics, probs; the weights are checkpoint_epoch_<epoch>.pt's
    best: dict[str, Any] = field(default_factory=dict)


@dataclass
class Run:
    """What the loop functions share for one fold (a plain container, no behaviour)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler | None  # with precision fp16 only (CUDA or CPU)
    device: torch.device
    precision: str  # off, bf16 or fp16 (``auto`` resolved for the device)
    loss_weights: torch.Tensor  # per class, on device
    norm: InputNorm  # input mean/std on device, made once per run
    policy: MemoryPolicy
    memlog: MemoryLog | None
    pos: Position
    # sum of per-sample train losses not yet added to pos.loss_sum: kept on the device so a
    # step never waits for the GPU; folded in by flush_loss() when a value is needed
    pending_loss: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.pending_loss = torch.zeros((), dtype=torch.float64, device=self.device)


def flush_loss(run: Run) -> None:
    """Add the device-side loss sum to ``run.pos.loss_sum`` (one host-device sync)."""
    run.pos.loss_sum += float(run.pending_loss)
    run.pending_loss.zero_()


def make_scheduler(optimizer: torch.optim.Optimizer, train_cfg: dict[str, Any]) -> Any:
    """Per-epoch LR schedule: none, step (x0.1 every third of the epochs) or cosine.

    With ``train.warmup_epochs`` > 0: linear warm-up, then the schedule over the remaining
    epochs (:func:`fvc.models.warmup_scheduler`).
    """
    if train_cfg.get("warmup_epochs"):
        return warmup_scheduler(optimizer, train_cfg)
    kind, epochs = train_cfg["scheduler"], train_cfg["epochs"]
    if kind == "none":
        return None
    if kind == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, epochs // 3), gamma=0.1)
    if kind == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    raise ConfigError(f"train.scheduler: unknown schedule {kind!r} (none, step or cosine)")


def resolve_precision(precision: str, device: torch.device) -> str:
    """``train.precision`` for ``device``: ``auto`` is bf16 where the GPU supports it, else fp16,
    and bf16 on the CPU; bf16 asked for on a GPU without it is an error naming the key."""
    cuda = device.type == "cuda"
    if precision == "auto":
        return "bf16" if not cuda or torch.cuda.is_bf16_supported() else "fp16"
    if precision == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        name = torch.cuda.get_device_name(device)
        raise ConfigError(f"train.precision: bf16 is not supported by {name}; use fp16 or auto")
    return precision


def new_run(
    model: nn.Module,
    tc: dict[str, Any],
    device: torch.device,
    labels: np.ndarray,
    policy: MemoryPolicy,
    memlog: MemoryLog | None,
    norm: InputNorm,
    micro_batch_size: int | None = None,
) -> Run:
    """A fresh :class:`Run` for ``model`` (already on ``device``) with the ``train`` section ``tc``.

    AdamW, the ``train.scheduler`` schedule, a GradScaler for fp16 (on CUDA and on the CPU, so
    CI runs the scaler path; bf16 needs none), class weights from the training ``labels``; the
    micro-batch starts at ``micro_batch_size`` (default and maximum: the batch size).
    """
    # one group, or head + backbone at lr * train.backbone_lr_scale (fvc.models.param_groups)
    optimizer = torch.optim.AdamW(
        param_groups(model, tc), lr=tc["lr"], weight_decay=tc["weight_decay"]
    )
    precision, bs = resolve_precision(tc["precision"], device), tc["batch_size"]
    return Run(
        model=model,
        optimizer=optimizer,
        scheduler=make_scheduler(optimizer, tc),
        scaler=torch.amp.GradScaler(device.type) if precision == "fp16" else None,
        device=device,
        precision=precision,
        loss_weights=class_weights(labels, tc["class_weights"]).to(device),
        norm=norm,
        policy=policy,
        memlog=memlog,
        pos=Position(micro_batch_size=min(micro_batch_size or bs, bs), eval_batch_size=bs),
    )


def make_checkpoint(run: Run, fp: str, complete: bool = False) -> dict[str, Any]:
    """The ONE checkpoint dict: everything needed to continue bit-identically.

    Keys: ``format``, ``fingerprint``, ``complete``, every :class:`Position` field (position,
    micro-batch size, running loss, history, best record), the model, optimizer, scheduler and
    scaler states, ``rng`` (torch/CUDA/numpy/python) and library ``versions``. The best
    epoch's weights are not repeated here: they are ``checkpoint_epoch_<best epoch>.pt``'s.
    The tensors are the live ones: :class:`fvc.checkpoint.Checkpointer` copies them before a
    background write.
    """
    flush_loss(run)
    sched, scaler = run.scheduler, run.scaler
    return {
        "format": ckpt.FORMAT,
        "fingerprint": fp,
        "complete": complete,
        **dataclasses.asdict(run.pos),
        "model_state": run.model.state_dict(),
        "optimizer_state": run.optimizer.state_dict(),
        "scheduler_state": sched.state_dict() if sched is not None else None,
        "scaler_state": scaler.state_dict() if scaler is not None else None,
        "rng": ckpt.capture_rng(),
        "versions": ckpt.library_versions(),
        "saved_at": time.time(),
    }


def check_checkpoint(state: dict[str, Any], model: nn.Module) -> None:
    """Raise ``KeyError``/``ValueError`` unless ``state`` has every key of :func:`make_checkpoint`
    and weights of ``model``'s shapes (:func:`fvc.checkpoint.choose_resume` then falls back)."""
    need = {"model_state", "optimizer_state", "scheduler_state", "scaler_state", "rng", "versions"}
    missing = sorted((need | {f.name for f in dataclasses.fields(Position)}) - set(state))
    if missing:
        raise KeyError(f"missing key(s) {', '.join(missing)}")
    ours, theirs = model.state_dict(), state["model_state"]
    if set(ours) != set(theirs):
        raise ValueError(f"weights of another model ({len(theirs)} tensors, expected {len(ours)})")
    bad = [k for k, v in ours.items() if tuple(theirs[k].shape) != tuple(v.shape)]
    if bad:
        raise ValueError(f"{bad[0]} has shape {tuple(theirs[bad[0]].shape)}, expected "
                         f"{tuple(ours[bad[0]].shape)}")  # fmt: skip


def restore_checkpoint(run: Run, state: dict[str, Any]) -> None:
    """Load a :func:`make_checkpoint` dict back (RNG last: building the model consumed some)."""
    run.model.load_state_dict(state["model_state"])
    run.optimizer.load_state_dict(state["optimizer_state"])
    if run.scheduler is not None and state["scheduler_state"] is not None:
        run.scheduler.load_state_dict(state["scheduler_state"])
    if run.scaler is not None and state["scaler_state"] is not None:
        run.scaler.load_state_dict(state["scaler_state"])
    for f in dataclasses.fields(Position):
        setattr(run.pos, f.name, state[f.name])
    now = ckpt.library_versions()
    if state["versions"] != now:
        log.warning("checkpoint from %s, now %s: may not be bit-identical", state["versions"], now)
    ckpt.restore_rng(state["rng"])


def record_epoch(
    run: Run,
    e: int,
    lr: float,
    tc: dict[str, Any],
    started: float,
    val: tuple[np.ndarray, float, np.ndarray] | None = None,
) -> tuple[dict, bool]:
    """Book epoch ``e``: history row, best record, patience; returns ``(row, improved)``.

    ``val`` is ``(labels, val_loss, probs)`` of the validation; without it (the final model)
    the latest epoch is the model (``best``, so its epoch checkpoint is never pruned). ``lr``
    is the rate the epoch trained with (read before the schedule stepped); ``started``
    (``time.time()`` after training) counts the validation into the epoch's seconds. The running
    train loss and position are reset, so :class:`Position` then points at epoch ``e + 1``.
    """
    flush_loss(run)
    pos = run.pos
    row: dict[str, Any] = {
        "epoch": e,
        "train_loss": pos.loss_sum / max(pos.samples, 1),
        "lr": lr,
        "micro_batch_size": pos.micro_batch_size,
        "seconds": round(pos.seconds + time.time() - started, 3),
    }
    improved = True
    if val is None:
        pos.best = {"epoch": e}
    else:
        labels, val_loss, probs = val
        metric, m = tc["best_metric"], binary_metrics(labels, probs)
        value = float(val_loss if metric == "val_loss" else m[metric])
        row |= {"val_loss": val_loss, **{k: m[k] for k in HISTORY_COLUMNS if k in m}}
        improved = not pos.best or is_better(metric, value, pos.best["value"])
        if improved:
            pos.best = {"epoch": e, "value": value, "val_loss": val_loss, "metrics": m,
                        "probs": probs.tolist()}  # fmt: skip
        pos.bad_epochs = 0 if improved else pos.bad_epochs + 1
        pos.stopped_early = bool(tc["patience"]) and pos.bad_epochs >= tc["patience"]
    pos.history.append(row)
    pos.epoch, pos.batch_in_epoch, pos.loss_sum, pos.samples, pos.seconds = e, 0, 0.0, 0, 0.0
    return row, improved


def publish(
    outputs: FoldOutputs | FinalOutputs,
    run: Run,
    fold: int | None,
    data: FoldData,
    model_cfg: dict,
    metric: str,
    ckpt_dir: Path,
) -> dict[str, Any]:
    """Write the declared outputs (each atomically); returns the metrics.

    A fold publishes its best epoch (predictions, metrics, weights from that epoch's
    checkpoint: the best weights are stored once); the final model (``fold=None``) its last
    epoch's weights, in ``best_model.pt``'s layout, and no predictions.
    """
    pos, best = run.pos, run.pos.best
    if fold is None:
        columns, weights = FINAL_HISTORY_COLUMNS, run.model.state_dict()
        model = {"epoch": pos.epoch, "metric": None, "value": None}
        metrics = {"epochs_trained": pos.epoch, "skipped_batches": pos.skipped}
    else:
        probs = np.asarray(best["probs"], dtype=np.float64)
        pred = data.val_rows.assign(prob_fake=probs, pred=(probs >= 0.5).astype(int), fold=fold)
        write_parquet(outputs.predictions, pred)
        metrics = {
            "fold": fold,
            "best_epoch": best["epoch"],
            "epochs_trained": pos.epoch,
            "n_train": len(data.train) - data.n_aug,
            "n_val": len(data.val),
            "val_loss": best["val_loss"],
            **best["metrics"],
        }
        write_json(outputs.metrics, metrics)
        columns = HISTORY_COLUMNS
        weights = ckpt.load_checkpoint(ckpt.epoch_path(ckpt_dir, best["epoch"]))["model_state"]
        model = {"epoch": best["epoch"], "metric": metric, "value": best["value"]}
    write_text(outputs.history, pd.DataFrame(pos.history, columns=columns).to_csv(index=False))
    with atomic_path(outputs.model) as tmp:
        torch.save({"model_state": weights, "model": model_cfg, **model}, tmp)
    if run.memlog is not None:
        run.memlog.publish(outputs.memory_log)
    return metrics
