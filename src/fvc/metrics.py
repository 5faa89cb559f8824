"""Binary classification metrics for real (0) vs fake (1).

All values are returned as plain Python ``float``/``int`` so they can be stored in JSON and in
``torch.load(weights_only=True)`` checkpoints (numpy scalars are refused there).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

#: Metrics where larger is better (used for best-model selection).
HIGHER_IS_BETTER = {
    "accuracy": True,
    "balanced_accuracy": True,
    "precision": True,
    "recall": True,
    "f1": True,
    "roc_auc": True,
    "loss": False,
    "val_loss": False,
}

METRIC_NAMES = ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "roc_auc")
COUNT_NAMES = ("tn", "fp", "fn", "tp")


def binary_metrics(
    y_true: Sequence[int] | np.ndarray,
    prob_positive: Sequence[float] | np.ndarray,
    threshold: float = 0.5,
) -> dict[str, float | int]:
    """Threshold-based metrics plus ROC-AUC from positive-class probabilities.

    ROC-AUC is NaN when only one class is present (sklearn would raise), so a tiny validation
    fold degrades to a missing value instead of a crashed job.
    """
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(prob_positive, dtype=np.float64)
    if y.shape != p.shape:
        raise ValueError(f"labels and probabilities differ in length: {y.shape} vs {p.shape}")
    pred = (p >= threshold).astype(np.int64)
    out: dict[str, float | int] = {}
    if len(y) == 0:
        return {**dict.fromkeys(METRIC_NAMES, math.nan), **dict.fromkeys(COUNT_NAMES, 0)}
    out["accuracy"] = float(accuracy_score(y, pred))
    both = len(np.unique(y)) == 2
    out["balanced_accuracy"] = float(balanced_accuracy_score(y, pred)) if both else math.nan
    out["precision"] = float(precision_score(y, pred, zero_division=0))
    out["recall"] = float(recall_score(y, pred, zero_division=0))
    out["f1"] = float(f1_score(y, pred, zero_division=0))
    out["roc_auc"] = float(roc_auc_score(y, p)) if both else math.nan
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
    out.update(tn=int(tn), fp=int(fp), fn=int(fn), tp=int(tp))
    return out


def is_better(metric: str, new: float, best: float | None) -> bool:
    """Whether ``new`` improves on ``best`` for ``metric`` (NaN never improves)."""
    if new is None or (isinstance(new, float) and math.isnan(new)):
        return False
    if best is None or (isinstance(best, float) and math.isnan(best)):
        return True
    key = metric.removeprefix("val_")
    higher = HIGHER_IS_BETTER.get(metric, HIGHER_IS_BETTER.get(key, True))
    return new > best if higher else new < best
