"""fvc.metrics: AP, EER, log loss, Brier, threshold choice and grouped bootstrap intervals."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from sklearn import metrics as skm
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


def _cuts(y: list[int], p: list[float]) -> list[tuple[float, Fraction, Fraction]]:
    """(threshold, FPR, FNR) of "fake when p >= threshold", from strictest to most lenient: one
    cut above every score, then one at each distinct score. Exact fractions, counted one by one.
    """
    n_pos = sum(1 for label in y if label == 1)
    n_neg = len(y) - n_pos
    out = []
    for t in [math.inf, *sorted(set(p), reverse=True)]:
        fp = sum(1 for label, s in zip(y, p, strict=True) if label == 0 and s >= t)
        fn = sum(1 for label, s in zip(y, p, strict=True) if label == 1 and s < t)
        out.append((t, Fraction(fp, n_neg), Fraction(fn, n_pos)))
    return out


def _brute_force_eer(y: list[int], p: list[float]) -> tuple[float, float]:
    """The cut with the smallest |FPR - FNR| (the first, i.e. highest threshold, on a tie), its
    mean error and threshold (capped at 1 for the cut above every score).
    """
    best = None
    for t, fpr, fnr in _cuts(y, p):
        if best is None or abs(fpr - fnr) < best[0]:
            best = (abs(fpr - fnr), (fpr + fnr) / 2, min(t, 1.0))
    return float(best[1]), best[2]


def _random_sets(n_sets: int, seed: int):
    """Labelled score sets of 2 to 60 videos with both classes: continuous scores, scores on a
    coarse grid (many ties) and imbalanced classes.
    """
    rng = np.random.default_rng(seed)
    made = 0
    while made < n_sets:
        n = int(rng.integers(2, 61))
        y = (rng.random(n) < rng.uniform(0.1, 0.9)).astype(int)
        if y.min() == y.max():
            continue
        p = np.clip(rng.uniform(0, 0.5) * y + rng.random(n) * 0.7, 0, 1)
        if made % 3 == 1:
            p = np.round(p * 10) / 10
        made += 1
        yield y.tolist(), p.tolist()


def test_eer_matches_a_brute_force_sweep_over_every_threshold() -> None:
    """sklearn's default ROC curve drops the points on its straight parts, and the cut closest
    to equal error is often one of them: checked against every cut, counted by hand.
    """
    for y, p in _random_sets(300, seed=4):
        eer, thr = eer_point(y, p)
        want_eer, want_thr = _brute_force_eer(y, p)
        assert eer == pytest.approx(want_eer, abs=1e-12), (y, p)
        assert thr == want_thr, (y, p)


def test_eer_on_a_straight_part_of_the_roc_curve() -> None:
    # Sorted scores: f f r f f f f r r r (6 fakes, 4 reals). Fake when p >= 0.617 flags 4 fakes
    # and 1 real: FPR 1/4, FNR 2/6, 1/12 apart. At 0.533 (FPR 1/4, FNR 1/6) they are 1/12 apart
    # too and the higher threshold is kept. Both cuts lie on the ROC curve's vertical segment
    # from (1/4, 2/6) to (1/4, 1), whose inner points roc_curve drops by default; its end at 0.45
    # (FPR 1/4, FNR 0, 1/4 apart) would give EER 1/8.
    y = [1, 1, 0, 1, 1, 1, 1, 0, 0, 0]
    p = np.linspace(0.95, 0.2, 10)
    eer, thr = eer_point(y, p)
    assert eer == pytest.approx((1 / 4 + 2 / 6) / 2)
    assert thr == p[4]
    m = binary_metrics(y, p, thr)
    assert (m["fp"], m["fn"]) == (1, 2)
    assert choose_threshold(y, p, "eer") == p[4]


def test_eer_of_tied_and_all_equal_scores() -> None:
    # Tied scores are one cut: fake when p >= 0.5 flags both 0.5s or neither (splitting them, as
    # a sweep over sorted positions does, would find FPR = FNR = 0). At 0.5 the rates are
    # FPR 1/2, FNR 0; at 0.9 FPR 0, FNR 1/2: an exact tie, the higher cut is kept.
    y, p = [0, 1, 0, 1], [0.1, 0.5, 0.5, 0.9]
    assert eer_point(y, p) == (pytest.approx(0.25), 0.9)
    assert _brute_force_eer(y, p) == (0.25, 0.9)
    # All scores equal: flagging none (FNR 1) or all (FPR 1) are equally far from equal error;
    # EER 1/2 and the "nothing flagged" cut, capped at 1.
    for score in (0.0, 0.3, 1.0):
        y, p = [0, 1, 1, 0, 1], [score] * 5
        assert eer_point(y, p) == (0.5, 1.0)
        assert _brute_force_eer(y, p) == (0.5, 1.0)


def test_eer_of_one_class_or_no_videos_is_nan() -> None:
    for y, p in (([0, 0, 0], [0.1, 0.5, 0.9]), ([1, 1], [0.3, 0.3]), ([], [])):
        assert all(math.isnan(v) for v in eer_point(y, p))
        assert choose_threshold(y, p, "eer") == 0.5


def test_eer_rejects_other_labels_and_non_finite_scores() -> None:
    with pytest.raises(ValueError, match="labels must be 0"):
        eer_point([0, 2, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="finite"):
        eer_point([0, 1, 1], [0.1, math.nan, 0.3])


def test_youden_reaches_the_largest_j_over_every_threshold() -> None:
    """roc_curve's default drops points on straight parts of the curve; J = TPR - FPR is linear
    along them, so its maximum sits at a kept end: the threshold found reaches the largest J of
    all cuts. (Which of exactly tied maxima is returned is left to float rounding.)
    """
    for y, p in _random_sets(300, seed=5):
        j = [(min(t, 1.0), (1 - fnr) - fpr) for t, fpr, fnr in _cuts(y, p)]
        largest = max(value for _, value in j)
        thr = youden_threshold(y, p)
        assert any(t == thr and value == largest for t, value in j), (y, p)


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


def test_every_metric_is_sklearns_on_random_sets_with_ties() -> None:
    """fvc.metrics counts with numpy (no sklearn import in every job); the numbers are sklearn's:
    continuous scores, scores on a coarse grid (ties), imbalanced classes, any threshold."""
    rng = np.random.default_rng(7)
    for y, p in _random_sets(300, seed=6):
        thr = float(rng.choice([0.5, *p]))
        pred = (np.asarray(p) >= thr).astype(int)
        m = binary_metrics(y, p, thr)
        want = {
            "accuracy": skm.accuracy_score(y, pred),
            "balanced_accuracy": skm.balanced_accuracy_score(y, pred),
            "precision": skm.precision_score(y, pred, zero_division=0),
            "recall": skm.recall_score(y, pred, zero_division=0),
            "f1": skm.f1_score(y, pred, zero_division=0),
            "roc_auc": roc_auc_score(y, p),
        }
        for name, value in want.items():
            assert m[name] == pytest.approx(value, abs=1e-12), (name, y, p, thr)
        counts = skm.confusion_matrix(y, pred, labels=[0, 1]).ravel().tolist()
        assert [m[k] for k in ("tn", "fp", "fn", "tp")] == counts
        s = score_metrics(y, p)
        assert s["average_precision"] == pytest.approx(average_precision_score(y, p), abs=1e-12)
        assert s["brier"] == pytest.approx(skm.brier_score_loss(y, p), abs=1e-12)
        # Youden: sklearn's J at our threshold is its largest (on exactly tied maxima its float
        # rates may rank another cut first; the exact tie-break is the brute-force test's).
        fpr, tpr, cuts = skm.roc_curve(y, p, drop_intermediate=False)
        j = tpr - fpr
        at = np.flatnonzero(cuts == youden_threshold(y, p))
        at = at[0] if len(at) else 0  # 1.0 without a score of 1.0: the cut above every score
        assert j[at] == pytest.approx(j.max(), abs=1e-12), (y, p)


def test_one_class_sets_and_other_labels() -> None:
    m = binary_metrics([0, 0, 0], [0.2, 0.6, 0.9], 0.5)
    assert (m["tn"], m["fp"], m["fn"], m["tp"]) == (1, 2, 0, 0)
    assert m["precision"] == 0.0 and m["recall"] == 0.0 and m["f1"] == 0.0  # zero_division=0
    assert math.isnan(m["roc_auc"]) and math.isnan(m["balanced_accuracy"])
    assert m["accuracy"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="labels must be 0"):
        binary_metrics([0, 2, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="finite"):
        binary_metrics([0, 1, 1], [0.1, math.nan, 0.3])


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
