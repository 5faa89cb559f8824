"""fvc.metrics: AP, EER, log loss, Brier, threshold choice and grouped bootstrap intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

from fvc.metrics import (
    binary_metrics,
    bootstrap_ci,
    choose_threshold,
    eer_point,
    score_metrics,
    youden_threshold,
)


def test_eer_of_a_hand_computed_case() -> None:
    # Sorted scores: r r f r f f. At threshold 0.5 (predict fake for 0.5, 0.7, 0.9): one real
    # of three is a false positive (FPR 1/3) and one fake of three is missed (FNR 1/3).
    y = [0, 0, 1, 0, 1, 1]
    p = [0.1, 0.2, 0.3, 0.5, 0.7, 0.9]
    eer, thr = eer_point(y, p)
    assert eer == pytest.approx(1 / 3)
    assert thr == pytest.approx(0.5)
    m = binary_metrics(y, p, thr)
    assert (m["fp"], m["fn"]) == (1, 1)


def test_perfect_separation_has_zero_eer_and_youden_between_the_classes() -> None:
    y = [0, 0, 0, 1, 1, 1]
    p = [0.1, 0.2, 0.3, 0.6, 0.7, 0.8]
    eer, thr = eer_point(y, p)
    assert eer == 0.0 and 0.3 < thr <= 0.6
    assert 0.3 < youden_threshold(y, p) <= 0.6
    assert score_metrics(y, p)["average_precision"] == 1.0


def test_score_metrics_match_sklearn_and_the_definitions() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = np.clip(y * 0.3 + rng.random(200) * 0.7, 0, 1)
    m = score_metrics(y, p)
    assert m["average_precision"] == pytest.approx(average_precision_score(y, p))
    assert m["log_loss"] == pytest.approx(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7)))
    assert m["brier"] == pytest.approx(np.mean((p - y) ** 2))
    # At the EER threshold the two error rates are (nearly) equal.
    b = binary_metrics(y, p, m["eer_threshold"])
    fpr, fnr = b["fp"] / (b["fp"] + b["tn"]), b["fn"] / (b["fn"] + b["tp"])
    assert abs(fpr - fnr) < 0.03
    assert m["eer"] == pytest.approx((fpr + fnr) / 2, abs=0.015)


def test_one_class_gives_nan_ranking_scores_and_the_default_threshold() -> None:
    m = score_metrics([1, 1, 1], [0.2, 0.6, 0.9])
    assert math.isnan(m["average_precision"]) and math.isnan(m["eer"])
    assert m["brier"] == pytest.approx(np.mean([0.64, 0.16, 0.01]))
    assert choose_threshold([1, 1], [0.3, 0.9], "eer") == 0.5
    assert all(math.isnan(v) for v in score_metrics([], []).values())


def test_threshold_methods_differ_and_unknown_is_rejected() -> None:
    # Cuts (FPR, FNR): 0.9 (0, 1/2), 0.5 (1/6, 1/2), 0.45 (1/3, 1/2), 0.4 (1/3, 0).
    # Youden (max TPR - FPR) takes 0.4, which catches the fakes at 0.4; the EER cut is where the
    # two rates are closest, 0.45.
    y = [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    p = [0.1, 0.1, 0.2, 0.2, 0.45, 0.5, 0.4, 0.4, 0.4, 0.9, 0.9, 0.9]
    assert choose_threshold(y, p, "youden") == pytest.approx(0.4)
    assert choose_threshold(y, p, "eer") == pytest.approx(0.45)
    assert eer_point(y, p)[0] == pytest.approx((1 / 3 + 1 / 2) / 2)
    with pytest.raises(ValueError, match=r"cv\.threshold.*'median'"):
        choose_threshold(y, p, "median")


def test_bootstrap_interval_contains_the_estimate_and_is_reproducible() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    p = np.clip(y * 0.25 + rng.random(300) * 0.75, 0, 1)
    ci = bootstrap_ci(y, p, 0.5, n_resamples=300, seed=3)
    auc = roc_auc_score(y, p)
    lo, hi = ci["roc_auc"]
    assert lo < auc < hi and 0.02 < hi - lo < 0.25
    assert ci == bootstrap_ci(y, p, 0.5, n_resamples=300, seed=3)
    acc = float(np.mean((p >= 0.5) == y))
    assert ci["accuracy"][0] < acc < ci["accuracy"][1]
    assert ci["average_precision"][0] < average_precision_score(y, p) < ci["average_precision"][1]
    assert all(
        math.isnan(v) for pair in bootstrap_ci(y, p, 0.5, n_resamples=0).values() for v in pair
    )


def test_grouped_bootstrap_is_wider_when_groups_are_correlated() -> None:
    """20 groups of 10 near-identical videos: resampling videos pretends there are 200
    independent ones, resampling groups knows there are 20.
    """
    rng = np.random.default_rng(2)
    group_label = np.array([0, 1] * 10)
    group_score = np.clip(group_label * 0.2 + rng.random(20) * 0.8, 0, 1)
    y = np.repeat(group_label, 10)
    p = np.repeat(group_score, 10) + rng.normal(0, 0.001, 200)
    groups = np.repeat([f"g{i}" for i in range(20)], 10)
    flat = bootstrap_ci(y, p, 0.5, n_resamples=200, seed=0)
    grouped = bootstrap_ci(y, p, 0.5, groups=groups, n_resamples=200, seed=0)
    width = {k: (grouped[k][1] - grouped[k][0], flat[k][1] - flat[k][0]) for k in grouped}
    assert width["roc_auc"][0] > 2 * width["roc_auc"][1]
    assert width["accuracy"][0] > 2 * width["accuracy"][1]
