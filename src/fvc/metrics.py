"""Binary classification metrics for real (0) vs fake (1).

All values are returned as plain Python ``float``/``int`` so they can be stored in JSON and in
``torch.load(weights_only=True)`` checkpoints (numpy scalars are refused there).

Computed with numpy from exact counts, not with ``sklearn.metrics``: every train, refit and
predict job scores a set each epoch, and importing ``sklearn.metrics`` (it pulls in SciPy) costs
about 0.8 s per job, a fifth of a small job's start-up; the definitions are sklearn's and
``tests/unit/test_metrics.py`` checks them against sklearn on random inputs with ties.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

#: Threshold-based metrics of :func:`binary_metrics` (plus ROC-AUC), per fold and pooled.
METRIC_NAMES = ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "roc_auc")
#: Which way is better, for best-epoch selection and comparisons: every metric of
#: :data:`METRIC_NAMES` is higher-is-better, the losses are not.
HIGHER_IS_BETTER = {**dict.fromkeys(METRIC_NAMES, True), "loss": False, "val_loss": False}
COUNT_NAMES = ("tn", "fp", "fn", "tp")
#: Threshold-free scores of the predicted probabilities (see :func:`score_metrics`).
SCORE_NAMES = ("average_precision", "eer", "eer_threshold", "log_loss", "brier")
#: How the decision threshold is chosen on the pooled out-of-fold predictions (``cv.threshold``).
THRESHOLD_METHODS = ("eer", "youden")
#: Threshold used where no ROC curve exists (one class only), and by the per-fold metrics.
DEFAULT_THRESHOLD = 0.5
#: Probabilities are clipped to [EPS, 1 - EPS] for the log loss, so a confident mistake costs a
#: large but finite amount instead of infinity.
EPS = 1e-7


def binary_metrics(
    y_true: Sequence[int] | np.ndarray,
    prob_positive: Sequence[float] | np.ndarray,
    threshold: float = 0.5,
) -> dict[str, float | int]:
    """Threshold-based metrics plus ROC-AUC from positive-class probabilities.

    ROC-AUC is NaN when only one class is present (sklearn would raise), so a tiny validation
    fold degrades to a missing value instead of a crashed job.
    """
    y, p = _check(y_true, prob_positive)
    pred = (p >= threshold).astype(np.int64)
    out: dict[str, float | int] = {}
    if len(y) == 0:
        return {**dict.fromkeys(METRIC_NAMES, math.nan), **dict.fromkeys(COUNT_NAMES, 0)}
    tp = int(np.sum((pred == 1) & (y == 1)))
    fp = int(np.sum((pred == 1) & (y != 1)))
    fn = int(np.sum((pred != 1) & (y == 1)))
    tn = len(y) - tp - fp - fn
    both = 0 < tp + fn < len(y)  # fakes and reals
    out["accuracy"] = (tp + tn) / len(y)
    out["balanced_accuracy"] = (tp / (tp + fn) + tn / (tn + fp)) / 2 if both else math.nan
    out["precision"] = _ratio(tp, tp + fp)
    out["recall"] = _ratio(tp, tp + fn)
    out["f1"] = _ratio(2 * tp, 2 * tp + fp + fn)
    out["roc_auc"] = _roc_auc(*_cuts(y, p)[1:]) if both else math.nan
    out.update(tn=tn, fp=fp, fn=fn, tp=tp)
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


def _check(y_true: Sequence[int] | np.ndarray, prob: Sequence[float] | np.ndarray):
    """Labels (0 real, 1 fake) and probabilities as numpy arrays of the same length."""
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(prob, dtype=np.float64)
    if y.shape != p.shape:
        raise ValueError(f"labels and probabilities differ in length: {y.shape} vs {p.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"labels must be 0 (real) or 1 (fake), got {sorted(set(y.tolist()))}")
    return y, p


def _ratio(num: int, den: int) -> float:
    """``num / den``, 0 when ``den`` is 0 (sklearn's ``zero_division=0``)."""
    return num / den if den else 0.0


def _cuts(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every cut "fake when P(fake) >= t", strictest first: ``t`` = +inf (nothing flagged), then
    each distinct score descending (tied scores are one cut: no threshold parts them), with the
    true and false positives it flags (integer counts)."""
    if not np.isfinite(p).all():
        raise ValueError("probabilities must be finite")
    order = np.argsort(-p, kind="stable")
    p_sorted, y_sorted = p[order], y[order]
    # Position of the last video of each run of equal scores: the cut at that score flags it and
    # everything above it.
    last = np.r_[np.flatnonzero(np.diff(p_sorted)), len(p) - 1]
    tp = np.r_[0, np.cumsum(y_sorted)[last]]
    fp = np.r_[0, last + 1] - tp
    return np.r_[np.inf, p_sorted[last]], tp, fp


def _roc_auc(tp: np.ndarray, fp: np.ndarray) -> float:
    """Area under the full ROC curve of :func:`_cuts`' counts (trapezoids between the cuts; ties
    make the diagonal steps sklearn's ``roc_auc_score`` takes), summed in integer counts:
    P(score of a fake > score of a real) + P(tie) / 2."""
    n_pos = int(tp[-1])
    n_neg = int(fp[-1])
    twice_area = int(np.sum(np.diff(fp) * (tp[1:] + tp[:-1])))
    return twice_area / (2 * n_pos * n_neg)


def _average_precision(tp: np.ndarray, fp: np.ndarray) -> float:
    """sklearn's ``average_precision_score`` from :func:`_cuts`' counts: the precision at each
    cut weighted by the recall it adds (a step function, no interpolation)."""
    tp, fp = tp[1:], fp[1:]  # the cut above every score flags nothing and adds no recall
    recall_gain = np.diff(np.r_[0, tp]) / tp[-1]
    return float(np.sum(recall_gain * tp / (tp + fp)))


def eer_point(
    y_true: Sequence[int] | np.ndarray, prob_positive: Sequence[float] | np.ndarray
) -> tuple[float, float]:
    """Equal error rate and its threshold: where the false positive and false negative rates meet.

    The candidate thresholds are every distinct score ``t`` (fake when P(fake) >= t) and one above
    the top score (nothing flagged); tied scores are one candidate, as no threshold parts them.
    Both rates are step functions of ``t`` and rarely meet exactly, so the EER is taken at the
    candidate where |FPR - FNR| is smallest, as the mean of the two rates there. This is the
    definition of the ASVspoof challenges' reference ``compute_eer`` and of the ``roc_curve`` +
    ``argmin |fnr - fpr|`` recipe common in deepfake-detection code; the mean, rather than either
    rate alone, does not favour one error.

    Every candidate is examined: ``sklearn.metrics.roc_curve`` by default drops the points on
    straight parts of the curve (``drop_intermediate``), the candidate closest to equal error
    often lies on one, and skipping it moves both the EER and the decision threshold taken from
    it (``cv.threshold: eer``).

    FNR - FPR falls strictly from one candidate to the next, so at most two are closest: the last
    with FNR > FPR and the first with FNR < FPR. Their distances are compared exactly (in counts,
    not in rounded rates), so the choice never hinges on float rounding, and a tie goes to the
    higher threshold (fewer videos flagged as fake; also what ``argmin`` over ``roc_curve``'s
    descending thresholds picks). The threshold is the chosen candidate's score, capped at 1 for
    the one above the top score (closest only when all scores are equal). NaN for both when only
    one class is present: the missing class has no error rate.
    """
    y, p = _check(y_true, prob_positive)
    if len(np.unique(y)) < 2:
        return math.nan, math.nan
    return _eer(*_cuts(y, p))


def _eer(thresholds: np.ndarray, tp: np.ndarray, fp: np.ndarray) -> tuple[float, float]:
    """:func:`eer_point` from :func:`_cuts`' result (both classes present)."""
    n_pos, n_neg = int(tp[-1]), int(fp[-1])
    fn = n_pos - tp
    # |FN/P - FP/N| times P*N: integers, so equal distances compare equal.
    i = int(np.argmin(np.abs(fn * n_neg - fp * n_pos)))
    eer = (fp[i] / n_neg + fn[i] / n_pos) / 2
    return float(eer), float(min(thresholds[i], 1.0))


def youden_threshold(
    y_true: Sequence[int] | np.ndarray, prob_positive: Sequence[float] | np.ndarray
) -> float:
    """Threshold maximising Youden's J = TPR - FPR (NaN with one class).

    ``roc_curve``'s default ``drop_intermediate`` is harmless here, unlike for the EER: a dropped
    point lies midway between its two neighbours, where J is their mean, so it never holds a
    larger J than the points kept, and the first point reaching the largest J is always kept.
    """
    y, p = _check(y_true, prob_positive)
    if len(np.unique(y)) < 2:
        return math.nan
    thresholds, tp, fp = _cuts(y, p)
    # J times P*N, in integers: the first (highest) cut of the largest J wins, exactly.
    j = tp * int(fp[-1]) - fp * int(tp[-1])
    return float(min(thresholds[int(np.argmax(j))], 1.0))


def choose_threshold(
    y_true: Sequence[int] | np.ndarray, prob_positive: Sequence[float] | np.ndarray, method: str
) -> float:
    """The decision threshold for ``method``: ``eer`` (equal error rate) or ``youden`` (max J).

    Chosen once on the pooled out-of-fold predictions and then applied unchanged to every other
    set (predict sets), so no set's own labels leak into its decisions. Falls back to
    :data:`DEFAULT_THRESHOLD` when the predictions hold one class only (no ROC curve exists).
    """
    if method not in THRESHOLD_METHODS:
        raise ValueError(f"cv.threshold: unknown method {method!r}; use one of {THRESHOLD_METHODS}")
    if method == "eer":
        value = eer_point(y_true, prob_positive)[1]
    else:
        value = youden_threshold(y_true, prob_positive)
    return DEFAULT_THRESHOLD if math.isnan(value) else value


#: Metrics that get bootstrap confidence intervals (on the pooled out-of-fold predictions).
CI_NAMES = ("roc_auc", "average_precision", "accuracy")


def bootstrap_ci(
    y_true: Sequence[int] | np.ndarray,
    prob_positive: Sequence[float] | np.ndarray,
    threshold: float | np.ndarray,
    groups: Sequence[object] | np.ndarray | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of ROC-AUC, AP and accuracy (at ``threshold``: one value,
    or one per prediction, as when each outer fold of nested CV applies its own).

    With ``groups`` whole groups are resampled with replacement (a source's clips are not
    independent: resampling single clips would make the interval too narrow). Resamples that
    hold one class only are dropped for ROC-AUC and AP. The threshold stays fixed: the interval
    covers the sampling of videos, not the choice of the threshold. NaN bounds when fewer than
    two resamples were usable or ``n_resamples`` is 0.
    """
    y, p = _check(y_true, prob_positive)
    thr = np.broadcast_to(np.asarray(threshold, dtype=np.float64), y.shape)
    nan = (math.nan, math.nan)
    if n_resamples <= 0 or len(y) == 0:
        return dict.fromkeys(CI_NAMES, nan)
    if groups is None:
        members = [np.array([i]) for i in range(len(y))]
    else:
        codes = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)[1]
        order = np.argsort(codes, kind="stable")
        bounds = np.flatnonzero(np.diff(codes[order])) + 1
        members = np.split(order, bounds)
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {name: [] for name in CI_NAMES}
    for _ in range(n_resamples):
        pick = rng.integers(0, len(members), len(members))
        idx = np.concatenate([members[g] for g in pick])
        yb, pb = y[idx], p[idx]
        draws["accuracy"].append(float(np.mean((pb >= thr[idx]) == yb)))
        if yb.min() != yb.max():
            _, tp, fp = _cuts(yb, pb)
            draws["roc_auc"].append(_roc_auc(tp, fp))
            draws["average_precision"].append(_average_precision(tp, fp))
    tail = (1 - level) / 2 * 100
    out = {}
    for name, values in draws.items():
        if len(values) < 2:
            out[name] = nan
        else:
            lo, hi = np.percentile(values, [tail, 100 - tail])
            out[name] = (float(lo), float(hi))
    return out


def score_metrics(
    y_true: Sequence[int] | np.ndarray, prob_positive: Sequence[float] | np.ndarray
) -> dict[str, float]:
    """Average precision (PR-AUC), EER and its threshold, log loss and Brier score.

    These need no decision threshold. AP and EER are NaN with one class present; log loss and
    Brier are defined for any non-empty set.
    """
    y, p = _check(y_true, prob_positive)
    if len(y) == 0:
        return dict.fromkeys(SCORE_NAMES, math.nan)
    ap = eer = eer_thr = math.nan
    if len(np.unique(y)) == 2:
        cuts = _cuts(y, p)  # one sort for AP and EER
        ap = _average_precision(*cuts[1:])
        eer, eer_thr = _eer(*cuts)
    q = np.clip(p, EPS, 1 - EPS)
    return {
        "average_precision": ap,
        "eer": eer,
        "eer_threshold": eer_thr,
        "log_loss": float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))),
        "brier": float(np.mean((p - y) ** 2)),
    }
