"""Paired comparison of sweep variants against the baseline, fold by fold.

Cross-validation folds overlap in their training data, so per-fold scores of two models are
neither independent nor unpaired: a plain t-test on "mean ± std" of two configs is badly
over-confident. A variant that keeps the baseline's videos is trained on exactly the same
(repeat, fold) splits, so we test the per-fold *differences* with the corrected resampled t-test
of Nadeau & Bengio (2003), which inflates the variance by the train/test overlap:

    t = mean(d) / sqrt((1/J + n2/n1) * var(d)),   df = J - 1

with J = k·r paired folds (k folds, r repeats), n1 training and n2 test videos per fold, and
``var`` the sample variance (ddof=1). With r > 1 this is exactly the corrected repeated k-fold
test of Bouckaert & Frank (2004). The 95 % confidence interval of the mean difference uses the
same corrected standard error.

Pairing is checked, not assumed: every fold records the identity of its validation set
(``val_set`` in metrics.json, :func:`fvc.splits.validation_set_id`). A variant whose (repeat,
fold) validation sets are not all the baseline's (it overlays ``data`` keys that change which
videos are usable, or another ``data.metadata``) validated on other videos; its folds are no
pairs, so it gets its means and no test, and its ``pairing`` column (and the log) says why.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from fvc import io
from fvc.metrics import HIGHER_IS_BETTER, METRIC_NAMES
from fvc.splits import validation_set_id

log = logging.getLogger(__name__)

#: Name of the baseline variant (the config itself, without any sweep overlay).
BASELINE = "base"
#: Metrics compared, in this order (those missing from every fold are skipped).
COMPARED_METRICS = (*METRIC_NAMES, "val_loss")
#: Columns of comparison.tsv, in this order.
COMPARISON_COLUMNS = [
    "variant",
    "metric",
    "n_folds",
    "mean",
    "std",
    "diff",
    "ci_low",
    "ci_high",
    "t_stat",
    "df",
    "p_value",
    "pairing",
    "best",
    "higher_is_better",
]
#: ``pairing`` of a variant tested against the baseline fold by fold.
PAIRED = "paired"
#: ``pairing`` when the folds recorded no validation set identity (a per-fold table from
#: elsewhere): tested as pairs, as the (repeat, fold) index says, and marked as assumed.
ASSUMED = "paired (assumed: the folds recorded no validation set identity)"


@dataclass(frozen=True)
class PairedTest:
    """Result of a corrected paired t-test of per-fold differences (variant - baseline)."""

    n: int
    diff: float
    ci_low: float
    ci_high: float
    t_stat: float
    df: int
    p_value: float


def corrected_ttest(
    diffs: Sequence[float] | np.ndarray, test_train_ratio: float, confidence: float = 0.95
) -> PairedTest:
    """Corrected resampled t-test (Nadeau & Bengio; Bouckaert & Frank with repeats).

    ``diffs`` holds one paired difference per (repeat, fold); ``test_train_ratio`` is n2/n1
    (1/(k-1) for plain K-fold). NaN differences (a metric undefined on a fold) are dropped.
    A zero variance is handled explicitly instead of dividing by zero: all differences zero
    means "no difference" (t = 0, p = 1), a constant non-zero difference is infinitely
    significant (p = 0) with a zero-width interval.
    """
    if test_train_ratio < 0:
        raise ValueError(f"test_train_ratio must be >= 0, got {test_train_ratio}")
    d = np.asarray(diffs, dtype=np.float64)
    d = d[~np.isnan(d)]
    n = len(d)
    if n == 0:
        return PairedTest(0, math.nan, math.nan, math.nan, math.nan, 0, math.nan)
    mean = float(d.mean())
    if n == 1:
        return PairedTest(1, mean, math.nan, math.nan, math.nan, 0, math.nan)
    df = n - 1
    var = float(d.var(ddof=1))
    # Differences equal up to rounding (e.g. 0.1+0.2 vs 0.3) count as a zero variance.
    if var <= (1e-12 * max(1.0, abs(mean))) ** 2:
        if mean == 0.0 or abs(mean) < 1e-12:
            return PairedTest(n, 0.0, 0.0, 0.0, 0.0, df, 1.0)
        return PairedTest(n, mean, mean, mean, math.copysign(math.inf, mean), df, 0.0)
    se = math.sqrt((1.0 / n + test_train_ratio) * var)
    t_stat = mean / se
    p_value = float(2.0 * stats.t.sf(abs(t_stat), df))
    half = float(stats.t.ppf(0.5 + confidence / 2.0, df)) * se
    return PairedTest(n, mean, mean - half, mean + half, t_stat, df, min(p_value, 1.0))


def pairing(per_fold: pd.DataFrame, variant: str, baseline: str = BASELINE) -> str:
    """:data:`PAIRED` when every (repeat, fold) of ``variant`` validated on the same videos as
    the baseline's (``val_set``), else why not (one line for comparison.tsv and the log)."""
    if variant == baseline:
        return PAIRED
    if "val_set" not in per_fold.columns or per_fold["val_set"].isna().all():
        return ASSUMED
    sets = per_fold.set_index(["variant", "repeat", "fold"])["val_set"]
    theirs, ours = sets.loc[variant], sets.loc[baseline]
    joined = pd.concat([theirs.rename("v"), ours.rename("b")], axis=1, join="outer")
    differ = int((joined["v"] != joined["b"]).sum())
    if differ == 0:
        return PAIRED
    return (
        f"unpaired: {differ} of {len(joined)} (repeat, fold) validation sets differ from the "
        "baseline's (the variant changes which videos are usable); means only, no test"
    )


def compare_variants(
    per_fold: pd.DataFrame,
    test_train_ratio: float,
    baseline: str = BASELINE,
    metrics: Sequence[str] = COMPARED_METRICS,
) -> pd.DataFrame:
    """One row per (variant, metric): mean, std, paired difference to the baseline and its test.

    ``per_fold`` has one row per (variant, repeat, fold) with the metric columns and
    ``val_set``. Folds are paired on (repeat, fold) when their validation sets are the
    baseline's (:func:`pairing`); an unpaired variant gets the difference of the means and no
    test. The baseline's own rows have diff 0 and no test (p_value NaN). ``best`` marks the
    variant(s) with the best mean of each metric (lowest for losses).
    """
    missing = {"variant", "repeat", "fold"} - set(per_fold.columns)
    if missing:
        raise ValueError(f"per-fold table lacks column(s) {sorted(missing)}")
    variants = list(dict.fromkeys(per_fold["variant"]))
    if baseline not in variants:
        raise ValueError(f"baseline variant {baseline!r} has no folds (variants: {variants})")
    used = [m for m in metrics if m in per_fold.columns and per_fold[m].notna().any()]
    indexed = per_fold.set_index(["variant", "repeat", "fold"]).sort_index()
    dup = indexed.index[indexed.index.duplicated()].unique().tolist()
    if dup:
        raise ValueError(f"(variant, repeat, fold) {dup[:3]} appear more than once")
    base = indexed.loc[baseline]
    pairs = {v: pairing(per_fold, v, baseline) for v in variants}
    rows: list[dict[str, Any]] = []
    for metric in used:
        higher = HIGHER_IS_BETTER.get(metric, True)
        for variant in variants:
            values = indexed.loc[variant, metric].astype(float)
            row: dict[str, Any] = {
                "variant": variant,
                "metric": metric,
                "n_folds": int(values.notna().sum()),
                "mean": float(values.mean()),
                "std": float(values.std(ddof=1)) if values.notna().sum() > 1 else math.nan,
                "pairing": pairs[variant],
                "higher_is_better": higher,
            }
            if variant == baseline:
                row.update(diff=0.0, ci_low=0.0, ci_high=0.0, t_stat=math.nan, df=math.nan)
                row["p_value"] = math.nan
            elif pairs[variant] not in (PAIRED, ASSUMED):
                row.update(diff=row["mean"] - float(base[metric].astype(float).mean()))
                row.update(ci_low=math.nan, ci_high=math.nan, t_stat=math.nan, df=math.nan)
                row["p_value"] = math.nan
            else:
                paired = pd.concat([values, base[metric].astype(float)], axis=1, join="inner")
                test = corrected_ttest(paired.iloc[:, 0] - paired.iloc[:, 1], test_train_ratio)
                row.update(
                    diff=test.diff,
                    ci_low=test.ci_low,
                    ci_high=test.ci_high,
                    t_stat=test.t_stat,
                    df=test.df,
                    p_value=test.p_value,
                )
            rows.append(row)
    table = pd.DataFrame(rows, columns=[c for c in COMPARISON_COLUMNS if c != "best"])
    table["df"] = table["df"].astype("Int64")  # an integer, missing on the baseline's rows
    table["best"] = False
    for _metric, part in table.groupby("metric", sort=False):
        means = part["mean"].dropna()
        if means.empty:
            continue
        best = means.max() if part["higher_is_better"].iloc[0] else means.min()
        table.loc[means.index[np.isclose(means, best, rtol=0, atol=1e-12)], "best"] = True
    return table[COMPARISON_COLUMNS]


def read_fold_metrics(
    variants: Sequence[str],
    fold_ids: Sequence[Sequence[int]],
    metrics_paths: Sequence[str | os.PathLike[str]],
    predictions_paths: Sequence[str | os.PathLike[str]] | None = None,
) -> pd.DataFrame:
    """Per-fold metrics of every variant: ``metrics_paths`` is variant-major, (repeat, fold)-minor.

    ``fold_ids`` lists the (repeat, fold) of each path of one variant, in the same order for
    every variant. A metrics.json written before folds recorded ``val_set`` gets it from the
    fold's predictions (``predictions_paths``, in the same order), else None (the pairing is
    then assumed, :data:`ASSUMED`).
    """
    per_variant = len(fold_ids)
    if len(metrics_paths) != per_variant * len(variants):
        raise ValueError(
            f"expected {per_variant} metrics files for each of {len(variants)} variants, "
            f"got {len(metrics_paths)}"
        )
    rows = []
    for i, path in enumerate(metrics_paths):
        with open(path) as fh:
            m = json.load(fh)
        repeat, fold = fold_ids[i % per_variant]
        if "fold" in m and int(m["fold"]) != int(fold):
            raise ValueError(f"{path}: metrics of fold {m['fold']}, expected fold {fold}")
        if "val_set" not in m:
            m["val_set"] = None
            if predictions_paths is not None:
                ids = pd.read_parquet(predictions_paths[i], columns=["video_id"])["video_id"]
                m["val_set"] = validation_set_id(ids)
        rows.append({**m, "variant": variants[i // per_variant], "repeat": repeat, "fold": fold})
    return pd.DataFrame(rows)


def overlap_ratio(per_fold: pd.DataFrame, n_splits: int) -> float:
    """n2/n1 for the correction: mean validation over mean training videos, else 1/(k-1)."""
    if {"n_val", "n_train"} <= set(per_fold.columns):
        n_val = per_fold["n_val"].astype(float).mean()
        n_train = per_fold["n_train"].astype(float).mean()
        if n_train > 0 and not math.isnan(n_val):
            return float(n_val / n_train)
    return 1.0 / (n_splits - 1)


def write_comparison(
    variants: Sequence[str],
    fold_ids: Sequence[Sequence[int]],
    metrics_paths: Sequence[str | os.PathLike[str]],
    out_tsv: str | os.PathLike[str],
    out_png: str | os.PathLike[str],
    n_splits: int,
    predictions_paths: Sequence[str | os.PathLike[str]] | None = None,
) -> pd.DataFrame:
    """Read every variant's per-fold metrics, write comparison.tsv and its plot."""
    per_fold = read_fold_metrics(variants, fold_ids, metrics_paths, predictions_paths)
    ratio = overlap_ratio(per_fold[per_fold["variant"] == BASELINE], n_splits)
    table = compare_variants(per_fold, ratio)
    log.info(
        "%d variants x %d (repeat, fold) pairs, n2/n1 = %.3f",
        len(variants),
        len(fold_ids),
        ratio,
    )
    for variant in variants:
        why = table.loc[table["variant"] == variant, "pairing"].iloc[0]
        if why != PAIRED:
            log.warning("%s: %s", variant, why)
    tested = table["pairing"].isin([PAIRED, ASSUMED])
    for row in table[(table["variant"] != BASELINE) & tested].itertuples():
        log.info(
            "%s %s: diff %+.4f [%+.4f, %+.4f], p = %.3g",
            row.variant,
            row.metric,
            row.diff,
            row.ci_low,
            row.ci_high,
            row.p_value,
        )
    io.write_tsv(out_tsv, table)
    plot_comparison(per_fold, table, out_png)
    return table


def plot_comparison(
    per_fold: pd.DataFrame, table: pd.DataFrame, out_png: str | os.PathLike[str]
) -> None:
    """One panel per metric: every fold's value per variant, its mean, and diff/p to the base."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(dict.fromkeys(table["metric"]))
    variants = list(dict.fromkeys(table["variant"]))
    ncols = min(3, max(1, len(metrics)))
    nrows = max(1, math.ceil(len(metrics) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4 * ncols, 3.2 * nrows), dpi=100, squeeze=False)
    rng = np.random.default_rng(0)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        rows = table[table["metric"] == metric].set_index("variant")
        for x, variant in enumerate(variants):
            values = per_fold.loc[per_fold["variant"] == variant, metric].astype(float)
            jitter = rng.uniform(-0.12, 0.12, len(values))
            ax.scatter(x + jitter, values, s=12, alpha=0.6)
            r = rows.loc[variant]
            ax.hlines(r["mean"], x - 0.3, x + 0.3, colors="k", lw=2)
            if variant != BASELINE and not math.isnan(r["p_value"]):
                ax.annotate(
                    f"Δ {r['diff']:+.3f}\np {r['p_value']:.2g}",
                    (x, 1.0),
                    xycoords=("data", "axes fraction"),
                    ha="center",
                    va="top",
                    fontsize=7,
                )
        lo, hi = ax.get_ylim()
        ax.set_ylim(lo, hi + 0.3 * (hi - lo))  # headroom for the Δ/p labels above the points
        best = rows.index[rows["best"]].tolist()
        ax.set_xticks(range(len(variants)))
        ax.set_xticklabels([f"{v}*" if v in best else v for v in variants], rotation=30, fontsize=8)
        ax.set_title(metric, fontsize=9)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.set_visible(False)
    fig.suptitle("Per-fold values, mean (bar), Δ and p vs base (* = best)", fontsize=9)
    fig.tight_layout()
    with io.atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
