"""What a run trains for, and what it publishes: targets, epoch bookkeeping, declared outputs.

A run has one of two targets:

- :class:`FoldTarget`: a cross-validation fold. It trains on the other folds' videos (and
  their augmented copies), validates after every epoch, keeps the best epoch by
  ``train.best_metric`` (with early stopping) and publishes that epoch's predictions, metrics
  and weights (the train rule's outputs, :class:`FoldOutputs`).
- :class:`FinalTarget`: the final model (:mod:`fvc.refit`). It trains on every video for a
  fixed number of epochs, validates nothing, and publishes the last epoch's weights in
  ``best_model.pt``'s layout (the refit rule's outputs, :class:`FinalOutputs`).

A target also names the run's random stream (seeds, batch order, windows): a fold's is its
index, the final model's :data:`FINAL_STREAM`, which no fold has.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch

from fvc.config import ModelConfig, TrainConfig, schema
from fvc.datasets import FoldData
from fvc.io import atomic_path, write_json, write_parquet, write_text
from fvc.metrics import binary_metrics, is_better
from fvc.splits import validation_set_id
from fvc.train import resume
from fvc.train.state import Run, flush_loss

#: Random stream (seeds, batch order) of the final model: no fold has it.
FINAL_STREAM = 1_000_000

#: Validation metrics a history row holds: every metric ``train.best_metric`` can select.
_SELECTABLE = schema()["properties"]["train"]["properties"]["best_metric"]["enum"]
HISTORY_METRICS = tuple(m for m in _SELECTABLE if m != "val_loss")
HISTORY_COLUMNS = (
    "epoch", "train_loss", "val_loss", *HISTORY_METRICS, "lr", "micro_batch_size", "seconds"
)  # fmt: skip
FINAL_HISTORY_COLUMNS = ("epoch", "train_loss", "lr", "micro_batch_size", "seconds")


class _InDir:
    """``in_dir(folder)``: the outputs under their usual file names (:attr:`NAMES`)."""

    NAMES: ClassVar[tuple[str, ...]]

    @classmethod
    def in_dir(cls, out_dir: str | Path) -> Any:
        return cls(*(Path(out_dir) / name for name in cls.NAMES))


@dataclass
class FoldOutputs(_InDir):
    """The train rule's declared outputs (docs/artifacts.md)."""

    NAMES = ("metrics.json", "predictions.parquet", "history.csv", "best_model.pt", "memory.jsonl")
    metrics: str | Path
    predictions: str | Path
    history: str | Path
    model: str | Path
    memory_log: str | Path


@dataclass
class FinalOutputs(_InDir):
    """The refit rule's declared outputs (docs/artifacts.md): the final model, no validation."""

    NAMES = ("model.pt", "history.csv", "memory.jsonl")
    model: str | Path
    history: str | Path
    memory_log: str | Path


@dataclass(frozen=True)
class FoldTarget:
    """Cross-validation fold ``fold``: validate every epoch, publish the best one."""

    fold: int
    outputs: FoldOutputs
    validates: ClassVar[bool] = True

    @property
    def stream(self) -> int:
        return int(self.fold)

    @property
    def held_out(self) -> int:
        """The fold whose videos validate (``splits.parquet``'s ``fold`` column)."""
        return int(self.fold)

    @property
    def name(self) -> str:
        return f"fold {self.fold}"

    @property
    def epoch_limit(self) -> int | None:
        """Epochs after which to stop, when not ``train.epochs`` (the fingerprint includes it)."""
        return None

    def publish(
        self, run: Run, data: FoldData, model_cfg: ModelConfig, train: TrainConfig, ckpt_dir: Path
    ) -> dict[str, Any]:
        """Predictions, metrics and weights of the best epoch (from that epoch's checkpoint:
        the best weights are stored once), the history and the memory log; each atomically."""
        pos, best, out = run.pos, run.pos.best, self.outputs
        probs = np.asarray(best["probs"], dtype=np.float64)
        pred = data.val_rows.assign(
            prob_fake=probs, pred=(probs >= 0.5).astype(int), fold=self.fold
        )
        write_parquet(out.predictions, pred)
        metrics = {
            "fold": self.fold,
            "best_epoch": best["epoch"],
            "epochs_trained": pos.epoch,
            "n_train": len(data.train) - data.n_aug,
            "n_val": len(data.val),
            "val_set": validation_set_id(data.val_rows["video_id"]),
            "val_loss": best["val_loss"],
            **best["metrics"],
        }
        write_json(out.metrics, metrics)
        weights = resume.load_checkpoint(resume.epoch_path(ckpt_dir, best["epoch"]))["model_state"]
        info = {"epoch": best["epoch"], "metric": train.best_metric, "value": best["value"]}
        _publish_common(out, run, HISTORY_COLUMNS, weights, model_cfg, info)
        return metrics

    def done_line(self, run: Run, train: TrainConfig) -> str:
        best = run.pos.best
        return f"best epoch {best['epoch']}, {train.best_metric} {best['value']:.4f}"


@dataclass(frozen=True)
class FinalTarget:
    """The final model: every video trains for ``epochs`` epochs; the last epoch is the model.

    The LR schedule still spans ``train.epochs``, so epoch ``e`` trains exactly as it did in
    the folds.
    """

    outputs: FinalOutputs
    epochs: int
    validates: ClassVar[bool] = False
    stream: ClassVar[int] = FINAL_STREAM
    held_out: ClassVar[None] = None
    name: ClassVar[str] = "final model"

    @property
    def epoch_limit(self) -> int | None:
        return int(self.epochs)

    def publish(
        self, run: Run, data: FoldData, model_cfg: ModelConfig, train: TrainConfig, ckpt_dir: Path
    ) -> dict[str, Any]:
        """The last epoch's weights in ``best_model.pt``'s layout, the history, the memory log."""
        pos = run.pos
        info = {"epoch": pos.epoch, "metric": None, "value": None}
        weights = run.model.state_dict()
        _publish_common(self.outputs, run, FINAL_HISTORY_COLUMNS, weights, model_cfg, info)
        return {"epochs_trained": pos.epoch, "skipped_batches": pos.skipped}

    def done_line(self, run: Run, train: TrainConfig) -> str:
        return f"{run.pos.epoch} epochs, the last one's weights (no validation)"


Target = FoldTarget | FinalTarget


def _publish_common(
    out: FoldOutputs | FinalOutputs,
    run: Run,
    columns: tuple[str, ...],
    weights: dict[str, torch.Tensor],
    model_cfg: ModelConfig,
    info: dict[str, Any],
) -> None:
    """history.csv, the model file (weights + the model section + ``info``), memory.jsonl."""
    history = pd.DataFrame(run.pos.history, columns=list(columns))
    write_text(out.history, history.to_csv(index=False))
    with atomic_path(out.model) as tmp:
        torch.save({"model_state": weights, "model": model_cfg.as_dict(), **info}, tmp)
    if run.memlog is not None:
        run.memlog.publish(out.memory_log)


def record_epoch(
    run: Run,
    e: int,
    lr: float,
    train: TrainConfig,
    started: float,
    val: tuple[np.ndarray, float, np.ndarray] | None = None,
) -> tuple[dict, bool]:
    """Book epoch ``e``: history row, best record, patience; returns ``(row, improved)``.

    ``val`` is ``(labels, val_loss, probs)`` of the validation; without it (the final model)
    the latest epoch is the model (``best``, so its epoch checkpoint is never pruned). ``lr``
    is the rate the epoch trained with (read before the schedule stepped); ``started``
    (``time.time()`` after training) counts the validation into the epoch's seconds. The running
    train loss and position are reset, so :class:`~fvc.train.state.Position` then points at
    epoch ``e + 1``.
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
        metric, m = train.best_metric, binary_metrics(labels, probs)
        value = float(val_loss if metric == "val_loss" else m[metric])
        row |= {"val_loss": val_loss, **{k: m[k] for k in HISTORY_METRICS}}
        improved = not pos.best or is_better(metric, value, pos.best["value"])
        if improved:
            pos.best = {
                "epoch": e,
                "value": value,
                "val_loss": val_loss,
                "metrics": m,
                "probs": probs.tolist(),
            }
        pos.bad_epochs = 0 if improved else pos.bad_epochs + 1
        pos.stopped_early = bool(train.patience) and pos.bad_epochs >= train.patience
    pos.history.append(row)
    pos.epoch, pos.batch_in_epoch, pos.loss_sum, pos.samples, pos.seconds = e, 0, 0.0, 0, 0.0
    return row, improved
