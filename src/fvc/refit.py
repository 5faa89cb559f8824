"""The final model (the ``refit`` target): one model trained on every usable video.

After cross-validation, ``runs/<exp>/final/model.pt`` is trained

- on **every row of** ``splits.parquet`` (every usable video: all folds' training data
  together) plus ``augment.copies`` offline-augmented copies of each of them
  (``runs/<exp>/final/augment/``, made by :func:`fvc.augment.augment_fold` with ``fold=None``),
  so an epoch sees each video as often, and as augmented, as in a fold;
- for the **median of the folds' best epochs** (``best_epoch`` of each
  ``fold_<k>/metrics.json``), rounded down when the median falls between two epochs (even K:
  the final model sees K/(K-1) times the videos per epoch, so the lower epoch keeps its number
  of steps closer to the folds'), at least 1. The LR schedule still spans ``train.epochs``: epoch
  ``e`` of the final model trains with the same rate as epoch ``e`` of every fold;
- with the folds' loop (:func:`fvc.train.fit_fold` with a
  :class:`~fvc.train.publish.FinalTarget`): checkpoints in
  ``runs/<exp>/checkpoints/final/``, resume after a kill, OOM recovery, signals and the time
  budget. There is no validation: the last epoch's weights are the model.

``model.pt`` has ``best_model.pt``'s layout (``model_state``, ``model``, ``epoch``, ...), so
whatever loads a fold model loads it; ``refit.json`` records how it was made.
"""

from __future__ import annotations

import json
import logging
import math
import os
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from fvc.io import write_json
from fvc.train import FinalOutputs, FinalTarget, FoldInputs, run_fold

log = logging.getLogger(__name__)


class RefitError(ValueError):
    """The final model cannot be made from these inputs; the message names the file (one line)."""


def fold_best_epochs(metrics_paths: Sequence[str | os.PathLike[str]]) -> list[int]:
    """``best_epoch`` of every fold's ``metrics.json``, in the given order."""
    if not metrics_paths:
        raise RefitError("refit: no fold metrics.json given (train the folds first)")
    epochs = []
    for path in metrics_paths:
        path = Path(path)
        if not path.is_file():
            raise RefitError(f"{path}: missing; the final model needs every fold trained first")
        try:
            best = json.loads(path.read_text())["best_epoch"]
        except (ValueError, KeyError, TypeError) as exc:
            raise RefitError(f"{path}: no best_epoch ({type(exc).__name__}: {exc})") from None
        if isinstance(best, bool) or not isinstance(best, int) or best < 1:
            raise RefitError(f"{path}: best_epoch {best!r} is not a positive whole number")
        epochs.append(best)
    return epochs


def refit_epochs(best_epochs: Sequence[int]) -> int:
    """The median of the folds' best epochs, rounded down between two epochs, at least 1."""
    return max(1, math.floor(statistics.median(best_epochs)))


def refit(
    inputs: FoldInputs,
    metrics: Sequence[str | os.PathLike[str]],
    outputs: FinalOutputs,
    info: str | os.PathLike[str],
    model_cfg: dict | None,
    train_cfg: dict | None,
    memory_cfg: dict | None,
    checkpoint_dir: str | os.PathLike[str],
    **kwargs: Any,
) -> int:
    """Train and publish the final model; returns the job's exit status like
    :func:`fvc.train.run_fold` (0 done, 75 stopped with a checkpoint: rerun to resume, 2 bad
    input or config, with one log line). ``kwargs`` go to :func:`fvc.train.fit_fold`
    (``runtime_min``, ``threads``, ``device``, ...). ``info`` (``refit.json``) is written last.
    """
    try:
        best = fold_best_epochs(metrics)
    except RefitError as exc:
        log.error("%s", exc)
        return 2
    epochs = refit_epochs(best)
    n_videos = len(pd.read_parquet(inputs.splits, columns=["video_id"]))
    log.info(
        f"final model: {epochs} epochs (median of the folds' best epochs {best}, rounded down), "
        f"on all {n_videos} usable videos of {inputs.splits}"
    )
    target = FinalTarget(outputs, epochs)
    code = run_fold(target, inputs, model_cfg, train_cfg, memory_cfg, checkpoint_dir, **kwargs)
    if code == 0:
        n_aug = len(pd.read_parquet(inputs.aug_manifest, columns=["aug_row"]))
        write_json(
            info,
            {
                "epochs": epochs,
                "fold_best_epochs": best,
                "rule": "median of the folds' best epochs, rounded down, at least 1",
                "n_videos": n_videos,
                "n_augmented": n_aug,
            },
        )
    return code
