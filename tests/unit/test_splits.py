"""Fold assignment: stratified, group-aware, deterministic, with clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fvc.splits import SplitError, assign_folds, fold_summary, split_dataset


def _index(n_groups: int = 20, per_group: int = 3, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(n_groups):
        for i in range(per_group):
            label = int(rng.random() < 0.4)
            rows.append(
                {
                    "video_id": f"v{g * per_group + i + 1:05d}",
                    "path": f"/data/{g}_{i}.mp4",
                    "label": label,
                    "label_name": "fake" if label else "real",
                    "group": f"src{g}",
                    "clip_row": g * per_group + i,
                }
            )
    return pd.DataFrame(rows)


def test_stratified_folds_cover_every_video_once_and_keep_balance() -> None:
    idx = _index()
    out = assign_folds(idx, {"n_splits": 5, "seed": 1, "group_column": None})
    assert sorted(out["fold"].unique()) == [0, 1, 2, 3, 4]
    assert len(out) == len(idx) and out["video_id"].is_unique
    overall = idx["label"].mean()
    for _, part in out.groupby("fold"):
        assert abs(part["label"].mean() - overall) < 0.15


def test_group_aware_folds_never_split_a_group() -> None:
    out = assign_folds(_index(), {"n_splits": 4, "seed": 3, "group_column": "group"})
    assert (out.groupby("group")["fold"].nunique() == 1).all()


def test_folds_are_deterministic_and_independent_of_row_order() -> None:
    idx = _index()
    cfg = {"n_splits": 3, "seed": 7, "group_column": "group"}
    a = assign_folds(idx, cfg)
    b = assign_folds(idx.sample(frac=1.0, random_state=5), cfg)
    pd.testing.assert_frame_equal(a, b)
    c = assign_folds(idx, {**cfg, "seed": 8})
    assert not a["fold"].equals(c["fold"])


def test_too_few_members_in_a_class_names_the_class_and_counts() -> None:
    idx = _index()
    idx = pd.concat([idx[idx["label"] == 0], idx[idx["label"] == 1].head(2)])
    with pytest.raises(
        SplitError, match=r"class 'fake' \(label 1\) has 2 usable videos.*n_splits=5"
    ):
        assign_folds(idx, {"n_splits": 5, "seed": 0, "group_column": None})


def test_groups_come_from_the_index_group_column_whatever_the_metadata_column() -> None:
    """load_data copies the metadata column cv.group_column (e.g. cascade_id) into `group`."""
    idx = _index()
    a = assign_folds(idx, {"n_splits": 4, "seed": 3, "group_column": "group"})
    b = assign_folds(idx, {"n_splits": 4, "seed": 3, "group_column": "cascade_id"})
    pd.testing.assert_frame_equal(a, b)
    with pytest.raises(SplitError, match=r"cv\.group_column='cascade_id'.*no group column"):
        assign_folds(
            idx.drop(columns="group"), {"n_splits": 2, "seed": 0, "group_column": "cascade_id"}
        )


def test_split_dataset_writes_splits_and_summary(tmp_path) -> None:
    idx_path = tmp_path / "clips.parquet"
    _index().to_parquet(idx_path)
    split_dataset(
        idx_path,
        tmp_path / "splits.parquet",
        tmp_path / "summary.tsv",
        {"n_splits": 3, "seed": 0, "group_column": "group"},
    )
    splits = pd.read_parquet(tmp_path / "splits.parquet")
    assert list(splits.columns) == ["video_id", "path", "label", "group", "clip_row", "fold"]
    summary = pd.read_csv(tmp_path / "summary.tsv", sep="\t")
    assert summary["n_val"].sum() == len(splits)
    assert (summary["n_train"] + summary["n_val"] == len(splits)).all()
    pd.testing.assert_frame_equal(
        summary.drop(columns="balance_warning"),
        fold_summary(splits).drop(columns="balance_warning"),
        check_dtype=False,
    )
