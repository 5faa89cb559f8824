"""Stratified (optionally group-aware) K-fold assignment.

The assignment is a pure function of the usable videos, ``cv.n_splits``, ``cv.seed`` and
``cv.group_column``: rows are sorted by ``video_id`` first, so the order in which upstream stages
happened to write rows cannot change the folds, and no ``train.*`` or ``augment.*`` setting can.
``cv.group_column`` names the metadata column that groups clips; ``load_data`` copies its values
into the ``group`` column of the clip index, which is what the folds are grouped by.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fvc import io
from fvc.config import CVConfig, default

log = logging.getLogger(__name__)

SPLIT_COLUMNS = ["video_id", "path", "label", "group", "clip_row", "fold"]

#: Warn when a fold's positive fraction differs from the overall one by more than this.
BALANCE_WARN = 0.15


class SplitError(ValueError):
    """The videos cannot support the requested folds."""


def _check_class_counts(df: pd.DataFrame, n_splits: int) -> None:
    counts = df["label"].value_counts().to_dict()
    names = (
        df.groupby("label")["label_name"].first().to_dict() if "label_name" in df.columns else {}
    )
    for label in (0, 1):
        n = int(counts.get(label, 0))
        if n < n_splits:
            name = names.get(label, str(label))
            raise SplitError(
                f"class {name!r} (label {label}) has {n} usable videos, fewer than "
                f"cv.n_splits={n_splits}; counts per class: "
                + ", ".join(f"{names.get(k, k)}={int(v)}" for k, v in sorted(counts.items()))
            )


def assign_folds(index: pd.DataFrame, cv_cfg: CVConfig | dict[str, Any]) -> pd.DataFrame:
    """Return ``index`` sorted by video_id with a ``fold`` column (the fold it validates in).

    scikit-learn is imported here, not at the top: train, refit and predict jobs import this
    module for :func:`validation_set_id` only and would pay ~0.8 s of start-up each for it.
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    cv = CVConfig.of(cv_cfg)
    n_splits, seed, group_column = cv.n_splits, cv.seed, cv.group_column
    df = index.sort_values("video_id", kind="stable").reset_index(drop=True)
    _check_class_counts(df, n_splits)
    y = df["label"].to_numpy()
    fold = np.full(len(df), -1, dtype=np.int64)
    if group_column:
        if "group" not in df.columns:
            raise SplitError(
                f"cv.group_column={group_column!r}: the clip index has no group column "
                f"(columns: {', '.join(df.columns)})"
            )
        groups = df["group"].astype(str).to_numpy()
        n_groups = len(np.unique(groups))
        if n_groups < n_splits:
            raise SplitError(
                f"cv.group_column={group_column!r} has {n_groups} distinct groups, fewer than "
                f"cv.n_splits={n_splits}"
            )
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        parts = splitter.split(np.zeros(len(df)), y, groups)
    else:
        splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        parts = splitter.split(np.zeros(len(df)), y)
    for k, (_, val_idx) in enumerate(parts):
        fold[val_idx] = k
    df["fold"] = fold
    empty = [k for k in range(n_splits) if not (fold == k).any()]
    if empty:
        raise SplitError(f"folds {empty} received no videos; lower cv.n_splits")
    return df


def fold_summary(
    splits: pd.DataFrame, group_column: str | None = default("cv", "group_column")
) -> pd.DataFrame:
    """Per fold: validation size, class counts, positive fraction and number of groups."""
    overall = float(splits["label"].mean())
    rows = []
    for k, part in splits.groupby("fold", sort=True):
        pos = float(part["label"].mean())
        rows.append(
            {
                "fold": int(k),
                "n_val": len(part),
                "n_train": int((splits["fold"] != k).sum()),
                "n_negative": int((part["label"] == 0).sum()),
                "n_positive": int((part["label"] == 1).sum()),
                "positive_fraction": round(pos, 4),
                "n_groups": int(part["group"].nunique()) if "group" in part else len(part),
                "balance_warning": abs(pos - overall) > BALANCE_WARN,
            }
        )
    return pd.DataFrame(rows)


def fold_changes(previous: pd.DataFrame, splits: pd.DataFrame) -> dict[str, int]:
    """How the fold assignment moved, matching videos by ``path`` (a video's identity; its
    ``video_id`` is a row number and shifts when rows are inserted).

    ``moved``: in both, another fold now; ``kept``: same fold; ``new`` / ``gone``: in one only.
    """
    before = dict(zip(previous["path"], previous["fold"], strict=True))
    after = dict(zip(splits["path"], splits["fold"], strict=True))
    common = before.keys() & after.keys()
    moved = sum(int(before[p]) != int(after[p]) for p in common)
    return {
        "moved": moved,
        "kept": len(common) - moved,
        "new": len(after.keys() - before.keys()),
        "gone": len(before.keys() - after.keys()),
    }


def _log_fold_changes(previous_path: Path, splits: pd.DataFrame) -> None:
    try:
        previous = pd.read_parquet(previous_path, columns=["path", "fold"])
    except FileNotFoundError:
        log.info("fold changes: no previous splits.parquet to compare with (first split)")
        return
    except Exception as exc:  # a damaged copy only loses the comparison
        log.warning("fold changes: cannot read the previous splits %s: %s", previous_path, exc)
        return
    c = fold_changes(previous, splits)
    log.info(
        "fold changes vs the previous splits.parquet: %d of %d videos changed fold, %d kept "
        "their fold, %d new, %d gone%s",
        c["moved"],
        c["moved"] + c["kept"],
        c["kept"],
        c["new"],
        c["gone"],
        "" if any(c[k] for k in ("moved", "new", "gone")) else " (same folds)",
    )


def validation_set_id(video_ids: Iterable[str]) -> str:
    """Identity of a fold's validation set: the first 16 hex digits of SHA-256 over its sorted
    video ids. Two folds (of two sweep variants, say) validated on the same videos exactly when
    their ids are equal, which is what makes their scores a pair (:mod:`fvc.compare`)."""
    text = "\n".join(sorted(str(v) for v in video_ids))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def split_dataset(
    index_path: str | os.PathLike[str],
    out_splits: str | os.PathLike[str],
    out_summary: str | os.PathLike[str],
    cv_cfg: CVConfig | dict[str, Any],
    previous: str | os.PathLike[str] | None = None,
    outer: tuple[str | os.PathLike[str], int] | None = None,
) -> pd.DataFrame:
    """Read the clip index, assign folds, write splits.parquet and the per-fold summary.

    ``previous`` is where a copy of the last assignment is kept (Snakemake deletes
    splits.parquet before rerunning this rule): when given, the log says how many videos
    changed folds since then, and the copy is replaced by this assignment. ``outer`` =
    ``(outer_splits.parquet, o)`` splits only the training part of outer fold ``o`` (nested
    CV's inner folds, :mod:`fvc.nested`).
    """
    index = pd.read_parquet(index_path)
    if outer is not None:
        outer_path, o = outer
        assigned = pd.read_parquet(outer_path, columns=["video_id", "outer_fold"])
        stale = sorted(set(index["video_id"]) - set(assigned["video_id"]))
        if stale:
            raise SplitError(
                f"{outer_path}: video(s) {', '.join(stale[:5])} of {index_path} have no outer "
                "fold (the outer split is older than the clips: rerun outer_split)"
            )
        test = set(assigned.loc[assigned["outer_fold"] == int(o), "video_id"])
        index = index[~index["video_id"].isin(test)].reset_index(drop=True)
        log.info("outer fold %d: %d videos in its training part are split", int(o), len(index))
    splits = assign_folds(index, cv_cfg)
    if previous is not None:
        _log_fold_changes(Path(previous), splits)
    summary = fold_summary(splits)
    overall = float(splits["label"].mean())
    for row in summary.itertuples():
        log.info(
            "fold %d: %d val videos (%d real / %d fake, %d groups), %d train",
            row.fold,
            row.n_val,
            row.n_negative,
            row.n_positive,
            row.n_groups,
            row.n_train,
        )
        if row.balance_warning:
            log.warning(
                "fold %d: positive fraction %.2f deviates from the overall %.2f by more than %.2f",
                row.fold,
                row.positive_fraction,
                overall,
                BALANCE_WARN,
            )
    io.write_parquet(out_splits, splits[SPLIT_COLUMNS])
    io.write_tsv(out_summary, summary)
    if previous is not None:
        io.write_parquet(previous, splits[SPLIT_COLUMNS])
    return splits
