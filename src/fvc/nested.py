"""Nested cross-validation: what the winner of a sweep scores on videos that chose nothing.

A sweep picks the variant with the best cross-validated score, and that same score is what is
usually reported; with many variants and a few hundred source videos the selection bias is of
the size of the differences between methods (Cawley & Talbot, JMLR 2010). Nested CV
(``cv.outer_splits`` N >= 2) repeats the whole selection N times, each time without one outer
part of the videos, and scores the selected model once on that part:

1. :func:`outer_split`: the usable videos (``metadata.parquet``) into N stratified, group-aware
   outer folds, with a seed of their own (:func:`outer_seed`);
2. in each outer training part the usual ``cv.n_splits`` folds (x ``cv.n_repeats``) train every
   variant (:func:`fvc.splits.split_dataset` with ``outer``), and :func:`select_variant` picks
   the best mean inner score on ``cv.select_metric`` (default ``train.best_metric``);
3. the selected variant is refit on the whole outer training part (:mod:`fvc.refit`: median
   best epoch, the same robust loop) and :func:`score_outer_test` scores it once on the outer
   test part, at the threshold chosen on its own inner out-of-fold predictions;
4. :func:`aggregate_nested`: one row per outer fold, mean/std, and the pooled outer-test
   predictions (every video exactly once) with bootstrap CIs: the ``selection_corrected``
   estimate, beside ``naive_best_cv``, the plain run's winner and the score it reports.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fvc import io
from fvc.config import CVConfig, default
from fvc.metrics import (
    COUNT_NAMES,
    HIGHER_IS_BETTER,
    METRIC_NAMES,
    SCORE_NAMES,
    binary_metrics,
    bootstrap_ci,
    score_metrics,
)
from fvc.report import json_number
from fvc.splits import assign_folds, fold_summary

log = logging.getLogger(__name__)

#: Columns of outer_splits.parquet.
OUTER_COLUMNS = ["video_id", "path", "label", "group", "outer_fold"]
#: Columns of an outer fold's test_predictions.parquet.
TEST_COLUMNS = ["video_id", "path", "label", "prob_fake", "threshold", "pred", "outer_fold"]
#: The statistics rows of nested_results.feather, after one row per outer fold.
STAT_ROWS = ("mean", "std", "pooled", "pooled_ci_low", "pooled_ci_high")
#: Metric columns of nested_results.feather.
RESULT_METRICS = (*METRIC_NAMES, *SCORE_NAMES)


class NestedError(ValueError):
    """Nested-CV inputs that do not fit together; the message names the file (one line)."""


def outer_seed(seed: int) -> int:
    """Seed of the outer split, derived from ``cv.seed`` so that the outer folds are not the
    inner repeat 0's folds of the same videos."""
    digest = hashlib.sha256(f"fvc-cv-outer:{int(seed)}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def select_metric(cv: CVConfig | Mapping[str, Any], train_best_metric: str) -> str:
    """``cv.select_metric``, or ``train.best_metric`` when it is null."""
    return CVConfig.of(cv).select_metric or train_best_metric


def outer_split(
    metadata_path: str | os.PathLike[str],
    out_splits: str | os.PathLike[str],
    out_summary: str | os.PathLike[str],
    cv_cfg: CVConfig | Mapping[str, Any],
) -> pd.DataFrame:
    """Assign every usable video to one of ``cv.outer_splits`` outer folds; write
    ``outer_splits.parquet`` (:data:`OUTER_COLUMNS`) and its per-fold summary."""
    cv = CVConfig.of(cv_cfg)
    if cv.outer_splits < 2:
        raise NestedError(f"cv.outer_splits: {cv.outer_splits}; nested CV needs 2 or more")
    meta = pd.read_parquet(metadata_path)
    outer_cv = {**cv.as_dict(), "n_splits": cv.outer_splits, "seed": outer_seed(cv.seed)}
    folds = assign_folds(meta, outer_cv)
    summary = fold_summary(folds).rename(columns={"fold": "outer_fold"})
    out = folds.rename(columns={"fold": "outer_fold"})[OUTER_COLUMNS]
    for row in summary.itertuples():
        log.info(
            "outer fold %d: %d test videos (%d real / %d fake), %d in its training part",
            row.outer_fold,
            row.n_val,
            row.n_negative,
            row.n_positive,
            row.n_train,
        )
    io.write_parquet(out_splits, out)
    io.write_tsv(out_summary, summary)
    return out


def outer_test_ids(outer_splits: str | os.PathLike[str], outer: int) -> set[str]:
    """The video ids of outer fold ``outer``'s test part."""
    splits = pd.read_parquet(outer_splits, columns=["video_id", "outer_fold"])
    if int(outer) not in set(splits["outer_fold"].astype(int)):
        raise NestedError(f"{outer_splits}: no outer fold {outer}")
    return set(splits.loc[splits["outer_fold"] == int(outer), "video_id"])


# ----------------------------------------------------------------------------- selection


def select_variant(
    summaries: Mapping[str, str | os.PathLike[str]], metric: str
) -> tuple[str, dict[str, float | None]]:
    """The variant with the best mean inner score on ``metric`` (``summary.json``'s ``mean``)
    and every variant's score; ties go to the earlier variant (the base first)."""
    higher = HIGHER_IS_BETTER.get(metric, True)
    scores: dict[str, float | None] = {}
    for variant, path in summaries.items():
        value = json.loads(Path(path).read_text())["mean"].get(metric)
        scores[variant] = None if value is None else float(value)
    usable = {v: s for v, s in scores.items() if s is not None and not math.isnan(s)}
    if not usable:
        raise NestedError(f"no variant has a mean inner {metric} ({', '.join(summaries)})")
    best = max(usable.values()) if higher else min(usable.values())
    return next(v for v, s in usable.items() if s == best), scores


def write_selection(
    outer: int,
    summaries: Mapping[str, str | os.PathLike[str]],
    metric: str,
    out_json: str | os.PathLike[str],
) -> dict[str, Any]:
    """selection.json of outer fold ``outer``: the selected variant, the metric, every score."""
    selected, scores = select_variant(summaries, metric)
    record = {
        "outer_fold": int(outer),
        "metric": metric,
        "higher_is_better": HIGHER_IS_BETTER.get(metric, True),
        "selected": selected,
        "inner_score": scores[selected],
        "inner_scores": scores,
    }
    log.info(
        "outer fold %d: %s selected (mean inner %s %.4f; %s)",
        outer,
        selected,
        metric,
        scores[selected],
        ", ".join(f"{v} {s:.4f}" if s is not None else f"{v} -" for v, s in scores.items()),
    )
    io.write_json(out_json, record)
    return record


# ----------------------------------------------------------------------------- outer test


def score_outer_test(
    model: str | os.PathLike[str],
    clips: str | os.PathLike[str],
    index: str | os.PathLike[str],
    outer_splits: str | os.PathLike[str],
    selection: str | os.PathLike[str],
    inner_summary: str | os.PathLike[str],
    out_predictions: str | os.PathLike[str],
    out_metrics: str | os.PathLike[str],
    device: str = "cpu",
    batch_size: int = default("train", "batch_size"),
) -> dict[str, Any]:
    """Score the outer test part once with the refit model of the selected variant.

    The decision threshold is the one chosen on the selected variant's inner out-of-fold
    predictions (its inner ``summary.json``), never one tuned on the outer test part.
    """
    from fvc.predict import score

    sel = json.loads(Path(selection).read_text())
    outer = int(sel["outer_fold"])
    test_ids = outer_test_ids(outer_splits, outer)
    idx = pd.read_parquet(index)
    part = idx[idx["video_id"].isin(test_ids)].reset_index(drop=True)
    if part.empty:
        raise NestedError(f"{index}: none of outer fold {outer}'s test videos was decoded")
    threshold = float(json.loads(Path(inner_summary).read_text())["threshold"]["value"])
    scored = score(part, clips, [model], device=device, batch_size=batch_size)
    probs = scored["p_fake"].to_numpy(dtype=np.float64)
    preds = part[["video_id", "path", "label"]].assign(
        prob_fake=probs,
        threshold=threshold,
        pred=(probs >= threshold).astype(int),
        outer_fold=outer,
    )[TEST_COLUMNS]
    y = preds["label"].to_numpy()
    metrics = {
        "outer_fold": outer,
        "selected_variant": sel["selected"],
        "metric": sel["metric"],
        "inner_score": sel["inner_score"],
        "n_test": len(preds),
        "n_test_listed": len(test_ids),
        "threshold": threshold,
        **binary_metrics(y, probs, threshold),
        **score_metrics(y, probs),
    }
    io.write_parquet(out_predictions, preds)
    io.write_json(out_metrics, metrics)
    log.info(
        "outer fold %d (%s): %d test videos, ROC-AUC %.4f, accuracy %.4f at threshold %.4f",
        outer,
        sel["selected"],
        len(preds),
        metrics["roc_auc"],
        metrics["accuracy"],
        threshold,
    )
    return metrics


# ----------------------------------------------------------------------------- aggregate


def naive_best(summaries: Mapping[str, str | os.PathLike[str]], metric: str) -> dict[str, Any]:
    """The plain run's winner on ``metric`` and what a sweep without nesting reports for it:
    its mean CV score and its pooled out-of-fold metrics with their bootstrap CIs."""
    winner, scores = select_variant(summaries, metric)
    summary = json.loads(Path(summaries[winner]).read_text())
    return {
        "variant": winner,
        "metric": metric,
        "value": scores[winner],
        "cv_scores": scores,
        "pooled_out_of_fold": summary["pooled_out_of_fold"],
        "ci95": summary["ci95"],
    }


def aggregate_nested(
    selections: Sequence[str | os.PathLike[str]],
    predictions: Sequence[str | os.PathLike[str]],
    metrics: Sequence[str | os.PathLike[str]],
    outer_splits: str | os.PathLike[str],
    naive_summaries: Mapping[str, str | os.PathLike[str]],
    cv_cfg: CVConfig | Mapping[str, Any],
    out_results: str | os.PathLike[str],
    out_summary: str | os.PathLike[str],
    out_html: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """nested_results.feather, nested_summary.json and the report's page (one input per outer
    fold, in outer-fold order)."""
    cv = CVConfig.of(cv_cfg)
    rows = [json.loads(Path(p).read_text()) for p in metrics]
    sels = [json.loads(Path(p).read_text()) for p in selections]
    preds = pd.concat([pd.read_parquet(p) for p in predictions], ignore_index=True)
    dup = preds["video_id"][preds["video_id"].duplicated()].unique().tolist()
    if dup:
        raise NestedError(f"video(s) {dup[:5]} scored in more than one outer fold")
    metric = sels[0]["metric"] if sels else cv.select_metric
    per_fold = pd.DataFrame(
        {
            "outer_fold": [str(r["outer_fold"]) for r in rows],
            "selected_variant": [r["selected_variant"] for r in rows],
            "inner_score": [json_number(r["inner_score"]) for r in rows],
            **{c: [json_number(r.get(c)) for r in rows] for c in (*RESULT_METRICS, "threshold")},
            **{c: [r.get(c) for r in rows] for c in (*COUNT_NAMES, "n_test")},
        }
    )
    y = preds["label"].to_numpy()
    p = preds["prob_fake"].to_numpy(dtype=np.float64)
    thr = preds["threshold"].to_numpy(dtype=np.float64)  # each outer fold's own threshold
    pooled = {**binary_metrics(y, p, thr), **score_metrics(y, p)}
    groups, unit = None, "video"
    if cv.group_column:
        outer = pd.read_parquet(outer_splits).set_index("video_id")["group"]
        groups, unit = preds["video_id"].map(outer).to_numpy(), "group"
    ci = bootstrap_ci(y, p, thr, groups, cv.bootstrap_samples, seed=cv.seed)
    floats = [*RESULT_METRICS, "threshold", "inner_score"]
    numeric = per_fold[floats].astype(float)
    stats = [
        {"outer_fold": "mean", **numeric.mean(skipna=True).to_dict()},
        {"outer_fold": "std", **numeric.std(ddof=1, skipna=True).to_dict()},
        {"outer_fold": "pooled", **{c: pooled.get(c) for c in (*RESULT_METRICS, *COUNT_NAMES)}},
        {"outer_fold": "pooled_ci_low", **{c: lo for c, (lo, _) in ci.items()}},
        {"outer_fold": "pooled_ci_high", **{c: hi for c, (_, hi) in ci.items()}},
    ]
    for row in stats[:2]:
        row["threshold"] = math.nan  # each outer fold has its own
    stats[2]["n_test"] = len(preds)
    table = pd.concat([per_fold, pd.DataFrame(stats)], ignore_index=True)
    table["selected_variant"] = table["selected_variant"].fillna("")
    naive = naive_best(naive_summaries, metric)
    summary = {
        "outer_splits": len(rows),
        "select_metric": metric,
        "n_videos": len(preds),
        "selected": {str(s["outer_fold"]): s["selected"] for s in sels},
        "inner_scores": {str(s["outer_fold"]): s["inner_scores"] for s in sels},
        "selection_corrected": {
            **{k: json_number(v) for k, v in pooled.items()},
            "mean": {c: json_number(numeric[c].mean()) for c in RESULT_METRICS},
            "std": {c: json_number(numeric[c].std(ddof=1)) for c in RESULT_METRICS},
            "ci95": {
                "method": "percentile bootstrap",
                "resamples": cv.bootstrap_samples,
                "unit": unit,
                **{k: [json_number(lo), json_number(hi)] for k, (lo, hi) in ci.items()},
            },
        },
        "naive_best_cv": naive,
    }
    io.write_feather(out_results, table)
    io.write_json(out_summary, summary)
    if out_html is not None:
        io.write_text(out_html, nested_html(table, summary))
    sc, nv = summary["selection_corrected"], naive["pooled_out_of_fold"]
    log.info(
        "nested CV, %d outer folds: selection-corrected pooled ROC-AUC %s (95%% CI %s); the "
        "plain run's winner %s reports pooled ROC-AUC %s (95%% CI %s)",
        len(rows),
        _fmt(sc["roc_auc"]),
        _fmt_ci(sc["ci95"]["roc_auc"]),
        naive["variant"],
        _fmt(nv.get("roc_auc")),
        _fmt_ci(naive["ci95"].get("roc_auc")),
    )
    return summary


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{float(value):.3f}"


def _fmt_ci(pair: Any) -> str:
    if not pair or None in pair:
        return "-"
    return f"{pair[0]:.3f}-{pair[1]:.3f}"


def nested_html(table: pd.DataFrame, summary: dict[str, Any]) -> str:
    """The report's page: the selection-corrected estimate and the naive one side by side,
    then the per-outer-fold table."""
    sc, naive = summary["selection_corrected"], summary["naive_best_cv"]
    nv = naive["pooled_out_of_fold"]
    lines = []
    for name in ("roc_auc", "average_precision", "accuracy"):
        lines.append(
            f"<tr><th>{name}</th><td>{_fmt(sc.get(name))} [{_fmt_ci(sc['ci95'].get(name))}]</td>"
            f"<td>{_fmt(nv.get(name))} [{_fmt_ci(naive['ci95'].get(name))}]</td></tr>"
        )
    body = table.set_index("outer_fold").T.to_html(
        float_format=lambda v: f"{v:.3f}", na_rep="", border=0
    )
    selected = ", ".join(f"outer {o}: {v}" for o, v in summary["selected"].items())
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Nested CV</title><style>"
        "body{font-family:sans-serif;font-size:13px}td,th{padding:2px 8px;text-align:right}"
        "tr:nth-child(even){background:#f0f0f0}</style></head><body>"
        f"<h3>Honest estimate: nested CV, {summary['outer_splits']} outer folds, "
        f"{summary['n_videos']} videos</h3>"
        "<table><tr><th></th><th>selection-corrected (pooled outer test)</th>"
        f"<th>naive best CV ({naive['variant']}, pooled out-of-fold)</th></tr>"
        + "".join(lines)
        + "</table>"
        f"<p>Selected by mean inner {summary['select_metric']}: {selected}. The naive number "
        "is what a sweep without nesting reports for its winner; the selection-corrected one "
        "is what that choice scores on videos that took no part in it (95 % bootstrap CIs, "
        f"{sc['ci95']['unit']}s resampled).</p>{body}</body></html>\n"
    )
