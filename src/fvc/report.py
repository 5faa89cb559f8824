"""Cross-validation summary: per-fold metrics, mean and std, and the plots of the report.

``kfold_results.feather`` holds one row per fold plus a ``mean`` and a ``std`` row; the ``fold``
column is therefore a string (``"0"``, ``"1"``, ..., ``"mean"``, ``"std"``) so that the table stays
one flat frame that ``pandas.read_feather`` returns as-is.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fvc import io
from fvc.metrics import COUNT_NAMES, METRIC_NAMES, binary_metrics

log = logging.getLogger(__name__)

#: Columns summarised by mean and std (besides the confusion counts, which are summed in summary).
SUMMARY_COLUMNS = (*METRIC_NAMES, "val_loss")


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
        raise ValueError(f"fold(s) {dup} appear in more than one metrics file")
    return df


def _count_rows(tsv: str | os.PathLike[str] | None) -> int:
    if not tsv or not Path(tsv).exists():
        return 0
    return len(pd.read_csv(tsv, sep="\t"))


def kfold_table(per_fold: pd.DataFrame) -> pd.DataFrame:
    """Per-fold rows followed by ``mean`` and ``std`` (sample std, ddof=1) rows.

    With repeated K-fold, a leading ``repeat`` column (a string, empty on the mean and std
    rows, which summarise all repeats' folds) tells the repeats apart.
    """
    cols = [c for c in (*SUMMARY_COLUMNS, *COUNT_NAMES) if c in per_fold.columns]
    extra = [c for c in ("best_epoch", "epochs_trained", "n_train", "n_val") if c in per_fold]
    keys = ["repeat", "fold"] if "repeat" in per_fold.columns else ["fold"]
    table = per_fold[[*keys, *cols, *extra]].copy()
    for key in keys:
        table[key] = table[key].astype(int).astype(str)
    numeric = per_fold[cols + extra].astype(float)
    mean = numeric.mean(axis=0, skipna=True)
    std = numeric.std(axis=0, ddof=1, skipna=True)
    stats = pd.DataFrame([{"fold": "mean", **mean.to_dict()}, {"fold": "std", **std.to_dict()}])
    if "repeat" in keys:
        stats.insert(0, "repeat", "")
    table = pd.concat([table.astype({c: float for c in cols + extra}), stats], ignore_index=True)
    return table


def aggregate_folds(
    metrics_paths: Sequence[str | os.PathLike[str]],
    predictions_paths: Sequence[str | os.PathLike[str]],
    out_results: str | os.PathLike[str],
    out_summary: str | os.PathLike[str],
    excluded_paths: Sequence[str | os.PathLike[str]] = (),
    repeats: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Write kfold_results.feather and summary.json from the per-fold train outputs.

    Also checks that the out-of-fold predictions cover each video exactly once (per repeat),
    which catches a fold trained against stale splits. ``repeats`` gives the repeat of each
    path (repeated K-fold); with a single repeat the tables are exactly the plain K-fold ones.
    """
    if repeats is not None and len(set(repeats)) < 2:
        repeats = None
    per_fold = _read_metrics(metrics_paths, repeats)
    table = kfold_table(per_fold)
    frames = [pd.read_parquet(p) for p in predictions_paths]
    if repeats is not None:
        frames = [f.assign(repeat=int(r)) for f, r in zip(frames, repeats, strict=True)]
    preds = pd.concat(frames, ignore_index=True)
    ids = preds[["repeat", "video_id"]] if repeats is not None else preds["video_id"]
    dup = preds["video_id"][ids.duplicated()].unique().tolist()
    if dup:
        raise ValueError(
            f"{len(dup)} video(s) were predicted by more than one fold (e.g. {dup[:3]}): the "
            "folds were trained on different splits; rerun train for all folds"
        )

    pooled = binary_metrics(preds["label"].to_numpy(), preds["prob_fake"].to_numpy())
    stats = table.set_index("fold")
    mean_row, std_row = stats.loc["mean"], stats.loc["std"]
    summary: dict[str, Any] = {
        "n_folds": len(per_fold),
        "n_videos": preds["video_id"].nunique() if repeats is not None else len(preds),
        "n_excluded": sum(_count_rows(p) for p in excluded_paths),
        "mean": {c: _num(mean_row[c]) for c in SUMMARY_COLUMNS if c in mean_row},
        "std": {c: _num(std_row[c]) for c in SUMMARY_COLUMNS if c in std_row},
        "pooled_out_of_fold": {k: _num(v) for k, v in pooled.items()},
    }
    io.write_feather(out_results, table)
    io.write_json(out_summary, summary)
    log.info(
        "%d folds: mean ROC-AUC %.3f ± %.3f, accuracy %.3f ± %.3f",
        summary["n_folds"],
        summary["mean"].get("roc_auc", float("nan")),
        summary["std"].get("roc_auc", float("nan")),
        summary["mean"].get("accuracy", float("nan")),
        summary["std"].get("accuracy", float("nan")),
    )
    return summary


def _num(value: Any) -> float | None:
    """JSON-safe float: NaN becomes None (JSON has no NaN)."""
    v = float(value)
    return None if np.isnan(v) else v


def plot_roc_curves(
    predictions_paths: Sequence[str | os.PathLike[str]], out_png: str | os.PathLike[str]
) -> None:
    """One ROC curve per fold from the out-of-fold predictions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    for path in predictions_paths:
        df = pd.read_parquet(path)
        fold = int(df["fold"].iloc[0]) if len(df) else -1
        if df["label"].nunique() < 2:
            continue
        fpr, tpr, _ = roc_curve(df["label"], df["prob_fake"])
        auc = roc_auc_score(df["label"], df["prob_fake"])
        ax.plot(fpr, tpr, label=f"fold {fold} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="Out-of-fold ROC")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with io.atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def plot_training_curves(
    history_paths: Sequence[str | os.PathLike[str]], out_png: str | os.PathLike[str]
) -> None:
    """Train/val loss and validation ROC-AUC per epoch, all folds overlaid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_auc) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    for k, path in enumerate(history_paths):
        h = pd.read_csv(path)
        line = ax_loss.plot(h["epoch"], h["train_loss"], label=f"fold {k} train")[0]
        ax_loss.plot(h["epoch"], h["val_loss"], "--", color=line.get_color(), label=f"fold {k} val")
        ax_auc.plot(h["epoch"], h["roc_auc"], color=line.get_color(), label=f"fold {k}")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="Loss")
    ax_auc.set(xlabel="epoch", ylabel="ROC-AUC", title="Validation ROC-AUC")
    ax_loss.legend(fontsize=7, ncol=2)
    ax_auc.legend(fontsize=7)
    fig.tight_layout()
    with io.atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
