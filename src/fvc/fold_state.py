"""The state of one fold's training, kept apart from the loop in :mod:`fvc.train`.

- config: section defaults and :func:`fold_config` (an unknown key is an error, not a silent
  default);
- the containers the loop functions share: :class:`Run` (model, optimizer, schedule, ...:
  built by :func:`new_run`) and :class:`Progress` (where the fold stands: plain values only);
- the ONE checkpoint dict (:func:`make_checkpoint` / :func:`restore_checkpoint`);
- the end-of-epoch bookkeeping (history row, best epoch, patience: :func:`record_epoch`);
- the declared outputs of the train rule (:class:`FoldOutputs`, written by :func:`publish`).

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
from fvc.datasets import FoldData, class_weights
from fvc.io import atomic_path, write_json, write_parquet, write_text
from fvc.memory import MemoryLog, MemoryPolicy
from fvc.metrics import binary_metrics, is_better
from fvc.models import DEFAULT_MEAN, DEFAULT_STD, FINETUNE_DEFAULTS, param_groups, warmup_scheduler

log = logging.getLogger("fvc.train")  # one logger name for the whole training of a fold

DEFAULT_MODEL: dict[str, Any] = {"name": "small3d", "weights": None, "dropout": 0.2}
DEFAULT_TRAIN: dict[str, Any] = {
    "epochs": 8, "batch_size": 16, "lr": 0.003, "weight_decay": 0.0001, "scheduler": "cosine",
    "patience": 0, "best_metric": "roc_auc", "use_amp": False, "num_workers": 0,
    "class_weights": "none", "sampler": "random", "seed": 0, "checkpoint_every_n_batches": 50,
    "keep_epoch_checkpoints": 2, "time_margin_s": 120,
    **FINETUNE_DEFAULTS,  # backbone_lr_scale, freeze_backbone_epochs, warmup_epochs (fvc.models)
}  # fmt: skip
BEST_METRICS = ("roc_auc", "accuracy", "balanced_accuracy", "f1", "val_loss")
HISTORY_COLUMNS = [
    "epoch", "train_loss", "val_loss", "accuracy", "balanced_accuracy", "f1", "roc_auc", "lr",
    "micro_batch_size", "seconds",
]  # fmt: skip


def merge_config(section: str, defaults: dict[str, Any], given: dict[str, Any] | None) -> dict:
    """Defaults overlaid with ``given``; an unknown key is an error naming ``section.key``."""
    unknown = sorted(set(given or {}) - set(defaults))
    if unknown:
        raise ValueError(f"{section}: unknown key(s) {', '.join(unknown)}")
    return {**defaults, **(given or {})}


def fold_config(model_cfg: dict | None, train_cfg: dict | None) -> tuple[dict, dict]:
    """The complete ``model`` and ``train`` sections, checked before any work is done."""
    model_cfg = merge_config("model", DEFAULT_MODEL, model_cfg)
    tc = merge_config("train", DEFAULT_TRAIN, train_cfg)
    if tc["best_metric"] not in BEST_METRICS:
        raise ValueError(f"train.best_metric: {tc['best_metric']!r} is not one of {BEST_METRICS}")
    if tc["seed"] < 0:
        raise ValueError(f"train.seed: {tc['seed']} must be >= 0")
    return model_cfg, tc


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
    # (mean, std) of the model input: fvc.models.input_normalization(model_cfg)
    norm: tuple[tuple[float, ...], tuple[float, ...]] = (DEFAULT_MEAN, DEFAULT_STD)


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
    raise ValueError(f"train.scheduler: unknown schedule {kind!r} (none, step or cosine)")


def new_run(
    model: nn.Module,
    tc: dict[str, Any],
    device: torch.device,
    labels: np.ndarray,
    policy: MemoryPolicy,
    memlog: MemoryLog,
    micro_batch_size: int | None = None,
) -> Run:
    """A fresh :class:`Run` for ``model`` (already on ``device``) with the ``train`` section ``tc``.

    AdamW, the ``train.scheduler`` schedule, a GradScaler only for AMP on CUDA (bf16 on CPU
    needs none), class weights from the training ``labels``; the micro-batch starts at
    ``micro_batch_size`` (default and maximum: the batch size).
    """
    # one group, or head + backbone at lr * train.backbone_lr_scale (fvc.models.param_groups)
    optimizer = torch.optim.AdamW(
        param_groups(model, tc), lr=tc["lr"], weight_decay=tc["weight_decay"]
    )
    amp, bs = bool(tc["use_amp"]), tc["batch_size"]
    return Run(
        model=model,
        optimizer=optimizer,
        scheduler=make_scheduler(optimizer, tc),
        scaler=torch.amp.GradScaler("cuda") if amp and device.type == "cuda" else None,
        device=device,
        amp=amp,
        loss_weights=class_weights(labels, tc["class_weights"]).to(device),
        policy=policy,
        memlog=memlog,
        prog=Progress(micro_batch_size=min(micro_batch_size or bs, bs), eval_batch_size=bs),
    )


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


def best_model(prog: Progress, model_cfg: dict, metric: str) -> dict[str, Any]:
    """The best epoch's weights with what rebuilds the model (``best_model.pt``'s keys)."""
    return {
        "model_state": prog.best_state,
        "model": model_cfg,
        "epoch": prog.best["epoch"],
        "metric": metric,
        "value": prog.best["value"],
    }


def record_epoch(
    run: Run,
    e: int,
    labels: np.ndarray,
    val_loss: float,
    probs: np.ndarray,
    lr: float,
    tc: dict[str, Any],
    eval_started: float,
) -> tuple[dict, bool]:
    """Book epoch ``e``'s validation: history row, best record and weights, patience.

    ``lr`` is the rate the epoch trained with (read before the schedule stepped);
    ``eval_started`` (``time.time()``) counts the validation into the epoch's seconds. The
    running train loss and position are reset, so :class:`Progress` then points at epoch
    ``e + 1``.
    """
    prog, metric = run.prog, tc["best_metric"]
    m = binary_metrics(labels, probs)
    value = float(val_loss if metric == "val_loss" else m[metric])
    row = {
        "epoch": e,
        "train_loss": prog.loss_sum / max(prog.samples, 1),
        "val_loss": val_loss,
        **{k: m[k] for k in HISTORY_COLUMNS if k in m},
        "lr": lr,
        "micro_batch_size": prog.micro_batch_size,
        "seconds": round(prog.seconds + time.time() - eval_started, 3),
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
    with atomic_path(outputs.model) as tmp:
        torch.save(best_model(prog, model_cfg, metric), tmp)
    run.memlog.publish(outputs.memory_log)
    return metrics
