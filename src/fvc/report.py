"""Cross-validation summary: per-fold metrics, mean and std, pooled out-of-fold metrics.

``kfold_results.feather`` holds one row per fold, then ``mean`` and ``std`` rows over the folds,
then ``pooled`` (every metric on the pooled out-of-fold predictions, threshold-based ones at the
threshold chosen by ``cv.threshold``) and ``pooled_ci_low``/``pooled_ci_high`` (bootstrap 95 %
interval of the pooled ROC-AUC, AP and accuracy). The ``fold`` column is therefore a string
(``"0"``, ``"1"``, ..., ``"mean"``, ...), so the table stays one flat frame that
``pandas.read_feather`` returns as-is. Count columns (confusion counts, sizes, epochs) are
nullable integers: a count in the fold and pooled rows, missing in the statistics rows.

With repeated K-fold (``cv.n_repeats`` > 1) a leading ``repeat`` column (a string, empty on the
statistics rows, which summarise all repeats' folds) tells the repeats apart; the pooled rows
pool every repeat's out-of-fold predictions (each video once per repeat) and the bootstrap
resamples videos (or groups) with all their repeated predictions.

The plots of the report are in :mod:`fvc.plots`.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fvc import io
from fvc.config import CVConfig
from fvc.metrics import (
    CI_NAMES,
    COUNT_NAMES,
    DEFAULT_THRESHOLD,
    METRIC_NAMES,
    SCORE_NAMES,
    binary_metrics,
    bootstrap_ci,
    choose_threshold,
    score_metrics,
)

log = logging.getLogger(__name__)

#: Columns summarised by mean and std.
SUMMARY_COLUMNS = (*METRIC_NAMES, *SCORE_NAMES, "val_loss")
#: Integer columns of the fold table (missing in the mean/std/CI rows).
INT_COLUMNS = (*COUNT_NAMES, "best_epoch", "epochs_trained", "n_train", "n_val")
#: Row names after the per-fold rows, in order.
STAT_ROWS = ("mean", "std", "pooled", "pooled_ci_low", "pooled_ci_high")


def _read_metrics(
    paths: Sequence[str | os.PathLike[str]], repeats: Sequence[int] | None = None
) -> pd.DataFrame:
    """Per-fold metrics; with ``repeats`` (one per path) a ``repeat`` column keys them too."""
    rows = []
    for i, path in enumerate(paths):
        with open(path) as fh:
            m = json.load(fh)
        if "fold" not in m:
            raise ValueError(f"{path}: metrics file has no 'fold' key")
        if repeats is not None:
            m["repeat"] = int(repeats[i])
        rows.append(m)
    keys = ["repeat", "fold"] if repeats is not None else ["fold"]
    df = pd.DataFrame(rows).sort_values(keys).reset_index(drop=True)
    dup = df[keys][df[keys].duplicated()].to_numpy().tolist()
    if dup:
        dup = [d[0] for d in dup] if len(keys) == 1 else dup
        raise ValueError(f"fold(s) {dup} appear in more than one metrics file")
    return df


def _count_rows(tsv: str | os.PathLike[str] | None) -> int:
    if not tsv or not Path(tsv).exists():
        return 0
    return len(pd.read_csv(tsv, sep="\t"))


def _names(ids: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(map(str, ids[:limit]))
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def _check_duplicates(preds: pd.DataFrame) -> None:
    dup = sorted(preds["video_id"][preds["video_id"].duplicated()].unique())
    if dup:
        raise ValueError(
            f"{len(dup)} video(s) were predicted by more than one fold ({_names(dup)}): the folds "
            "were trained on different splits; rerun train for all folds"
        )


def check_coverage(preds: pd.DataFrame, splits: pd.DataFrame) -> None:
    """Each video of the splits is predicted exactly once, by the fold it validates in.

    Catches a fold trained against stale splits or an input list that misses a fold: both
    would otherwise silently bias the pooled metrics. Names the videos at fault.
    """
    _check_duplicates(preds)
    counts = preds["video_id"].value_counts()
    expected = set(splits["video_id"])
    missing = sorted(expected - set(counts.index))
    if missing:
        raise ValueError(
            f"{len(missing)} video(s) of splits.parquet have no out-of-fold prediction "
            f"({_names(missing)}): a fold's predictions are missing or stale; rerun train"
        )
    extra = sorted(set(counts.index) - expected)
    if extra:
        raise ValueError(
            f"{len(extra)} predicted video(s) are not in splits.parquet ({_names(extra)}): the "
            "folds were trained on different splits; rerun train for all folds"
        )
    fold_of = splits.set_index("video_id")["fold"]
    wrong = preds.loc[preds["fold"].to_numpy() != fold_of.loc[preds["video_id"]].to_numpy()]
    if len(wrong):
        raise ValueError(
            f"{len(wrong)} video(s) were predicted by a fold other than their validation fold in "
            f"splits.parquet ({_names(sorted(wrong['video_id']))}); rerun train for all folds"
        )


def fold_scores(preds: pd.DataFrame) -> pd.DataFrame:
    """Threshold-free scores (AP, EER, log loss, Brier) of each fold's own predictions (of
    each (repeat, fold) when ``preds`` has a ``repeat`` column).
    """
    keys = ["repeat", "fold"] if "repeat" in preds.columns else ["fold"]
    rows = [
        {
            **{k: int(v) for k, v in zip(keys, ids, strict=True)},
            **score_metrics(df["label"], df["prob_fake"]),
        }
        for ids, df in preds.groupby(keys, sort=True)
    ]
    return pd.DataFrame(rows, columns=[*keys, *SCORE_NAMES])


def kfold_table(per_fold: pd.DataFrame, pooled: dict[str, Any] | None = None) -> pd.DataFrame:
    """Per-fold rows, ``mean``/``std`` (sample std, ddof=1) rows and, given ``pooled``, the
    ``pooled`` and CI rows (``pooled`` holds the pooled metrics and ``ci``: name -> (lo, hi)).
    With a ``repeat`` column in ``per_fold`` (repeated K-fold) the table starts with it, a
    string that is empty on the statistics rows.
    """
    keys = ["repeat", "fold"] if "repeat" in per_fold.columns else ["fold"]
    floats = [c for c in (*SUMMARY_COLUMNS, "threshold") if c in per_fold.columns]
    ints = [c for c in INT_COLUMNS if c in per_fold.columns]
    table = per_fold[[*keys, *floats, *ints]].copy()
    for key in keys:
        table[key] = table[key].astype(int).astype(str)
    numeric = per_fold[floats].astype(float)
    stats = [
        {"fold": "mean", **numeric.mean(axis=0, skipna=True).to_dict()},
        {"fold": "std", **numeric.std(axis=0, ddof=1, skipna=True).to_dict()},
    ]
    if "threshold" in floats:  # the mean of a fixed threshold says nothing
        for row in stats:
            row["threshold"] = math.nan
    if pooled is not None:
        ci = pooled.get("ci", {})
        stats.append({"fold": "pooled", **{c: pooled.get(c) for c in (*floats, *ints)}})
        stats.append({"fold": "pooled_ci_low", **{c: ci[c][0] for c in ci}})
        stats.append({"fold": "pooled_ci_high", **{c: ci[c][1] for c in ci}})
    if "repeat" in keys:
        for row in stats:
            row["repeat"] = ""
    out = pd.concat(
        [table.astype({c: float for c in floats}), pd.DataFrame(stats)], ignore_index=True
    )
    out = out.astype({c: float for c in floats if c in out} | {c: "Int64" for c in ints})
    return out[[*keys, *floats, *ints]]


def aggregate_folds(
    metrics_paths: Sequence[str | os.PathLike[str]],
    predictions_paths: Sequence[str | os.PathLike[str]],
    out_results: str | os.PathLike[str],
    out_summary: str | os.PathLike[str],
    splits_path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    excluded_paths: Sequence[str | os.PathLike[str]] = (),
    cfg: dict[str, Any] | None = None,
    out_html: str | os.PathLike[str] | None = None,
    repeats: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Write kfold_results.feather and summary.json from the per-fold train outputs.

    ``cfg`` holds the ``cv`` keys ``threshold``, ``bootstrap_samples``, ``seed`` and
    ``group_column`` (the schema's defaults for missing ones). With ``splits_path`` the
    out-of-fold predictions must cover each video of the splits exactly once (see
    :func:`check_coverage`), and when ``group_column`` is set the bootstrap resamples the
    splits' groups instead of single videos. ``out_html`` gets the table as a page for the
    report (:func:`results_html`).

    ``repeats`` gives the repeat of each path (repeated K-fold; then ``splits_path`` is one
    splits.parquet per repeat, in repeat order, and coverage is checked per repeat). With a
    single repeat the tables are exactly the plain K-fold ones.
    """
    cv = CVConfig.of(cfg)
    if repeats is not None and len(set(repeats)) < 2:
        repeats = None
    per_fold = _read_metrics(metrics_paths, repeats)
    frames = [pd.read_parquet(p) for p in predictions_paths]
    if repeats is not None:
        frames = [f.assign(repeat=int(r)) for f, r in zip(frames, repeats, strict=True)]
    preds = pd.concat(frames, ignore_index=True)
    by_repeat = list(preds.groupby("repeat", sort=True)) if repeats is not None else [(0, preds)]
    groups = None
    if splits_path is None:
        for _, part in by_repeat:
            _check_duplicates(part)
    else:
        paths = [splits_path] if isinstance(splits_path, str | os.PathLike) else list(splits_path)
        if len(paths) != len(by_repeat):
            raise ValueError(f"{len(paths)} splits file(s) for {len(by_repeat)} repeat(s)")
        all_splits = [pd.read_parquet(p) for p in paths]
        for (_, part), splits in zip(by_repeat, all_splits, strict=True):
            check_coverage(part, splits)
        if cv.group_column:
            group_of = all_splits[0].set_index("video_id")["group"]
            groups = preds["video_id"].map(group_of).to_numpy()
    unit = "group" if groups is not None else "video"
    if groups is None and repeats is not None:
        # A video's predictions of every repeat are resampled together (not independent).
        groups = preds["video_id"].to_numpy()

    scores = fold_scores(preds)
    keys = ["repeat", "fold"] if repeats is not None else ["fold"]
    per_fold = per_fold.drop(columns=[c for c in SCORE_NAMES if c in per_fold]).merge(
        scores, on=keys, how="left"
    )
    per_fold["threshold"] = DEFAULT_THRESHOLD

    y, p = preds["label"].to_numpy(), preds["prob_fake"].to_numpy()
    threshold = choose_threshold(y, p, cv.threshold)
    pooled: dict[str, Any] = {
        **binary_metrics(y, p, threshold),
        **score_metrics(y, p),
        "threshold": threshold,
    }
    ci = bootstrap_ci(y, p, threshold, groups, cv.bootstrap_samples, seed=cv.seed)
    table = kfold_table(per_fold, {**pooled, "ci": ci})
    stats = table.set_index("fold")
    mean_row, std_row = stats.loc["mean"], stats.loc["std"]
    summary: dict[str, Any] = {
        "n_folds": len(per_fold),
        "n_videos": preds["video_id"].nunique() if repeats is not None else len(preds),
        "n_excluded": sum(_count_rows(p) for p in excluded_paths),
        "mean": {c: json_number(mean_row[c]) for c in SUMMARY_COLUMNS if c in mean_row},
        "std": {c: json_number(std_row[c]) for c in SUMMARY_COLUMNS if c in std_row},
        "threshold": {"method": cv.threshold, "value": threshold},
        "pooled_out_of_fold": {k: json_number(v) for k, v in pooled.items()},
        "ci95": {
            "method": "percentile bootstrap",
            "resamples": cv.bootstrap_samples,
            "unit": unit,
            **{k: [json_number(lo), json_number(hi)] for k, (lo, hi) in ci.items()},
        },
    }
    io.write_feather(out_results, table)
    io.write_json(out_summary, summary)
    if out_html is not None:
        io.write_text(out_html, results_html(table, summary))
    log.info(
        "%d folds: mean ROC-AUC %.3f ± %.3f; pooled ROC-AUC %.3f (95%% CI %.3f-%.3f), AP %.3f, "
        "EER %.3f; %s threshold %.3f: accuracy %.3f",
        summary["n_folds"],
        _nan(summary["mean"].get("roc_auc")),
        _nan(summary["std"].get("roc_auc")),
        _nan(pooled["roc_auc"]),
        *ci["roc_auc"],
        _nan(pooled["average_precision"]),
        _nan(pooled["eer"]),
        cv.threshold,
        threshold,
        _nan(pooled["accuracy"]),
    )
    return summary


def _nan(value: Any) -> float:
    return math.nan if value is None else float(value)


def json_number(value: Any) -> float | int | None:
    """JSON-safe number: integers stay integers, NaN/NA becomes None (JSON has no NaN)."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, bool | int | np.integer):
        return int(value)
    v = float(value)
    return None if np.isnan(v) else v


def results_html(table: pd.DataFrame, summary: dict[str, Any]) -> str:
    """kfold_results as a small standalone HTML page (the report shows it in a frame)."""
    thr, ci = summary["threshold"], summary["ci95"]
    if "repeat" in table.columns:  # repeated K-fold: columns r<repeat>/<fold>, then the stats
        pairs = zip(table["repeat"], table["fold"], strict=True)
        labels = [f"r{r}/{f}" if r else f for r, f in pairs]
        table = table.drop(columns="repeat").assign(fold=labels)
    shown = table.set_index("fold").T
    body = shown.to_html(float_format=lambda v: f"{v:.3f}", na_rep="", border=0)
    intervals = ", ".join(
        f"{name} [{ci[name][0]:.3f}, {ci[name][1]:.3f}]"
        for name in CI_NAMES
        if None not in ci[name]
    )
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>K-fold results</title><style>"
        "body{font-family:sans-serif;font-size:13px}td,th{padding:2px 8px;text-align:right}"
        "tr:nth-child(even){background:#f0f0f0}</style></head><body>"
        f"<h3>K-fold results: {summary['n_folds']} folds, {summary['n_videos']} videos "
        f"({summary['n_excluded']} excluded)</h3>"
        f"<p>Fold rows use threshold 0.5 (train's metrics.json); the pooled row uses the "
        f"<b>{thr['method']}</b> threshold <b>{thr['value']:.4f}</b> chosen on the pooled "
        f"out-of-fold predictions. Bootstrap 95 % CIs ({ci['resamples']} resamples of "
        f"{ci['unit']}s): {intervals or 'none'}.</p>"
        f"{body}</body></html>\n"
    )
