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


def test_split_logs_how_many_videos_changed_folds(tmp_path, caplog) -> None:
    """The previous assignment (kept outside Snakemake's outputs) is compared by path."""
    cv = {"n_splits": 3, "seed": 0, "group_column": "group"}
    previous = tmp_path / "cache/splits.parquet"
    index = _index()
    idx_path = tmp_path / "clips.parquet"
    index.to_parquet(idx_path)
    out = (tmp_path / "splits.parquet", tmp_path / "summary.tsv")
    with caplog.at_level("INFO", logger="fvc.splits"):
        split_dataset(idx_path, *out, cv, previous=previous)
        assert "no previous splits.parquet" in caplog.text
        caplog.clear()
        split_dataset(idx_path, *out, cv, previous=previous)  # same videos: same folds
        assert "0 of 60 videos changed fold, 60 kept their fold, 0 new, 0 gone (same folds)" in (
            caplog.text
        )
        first = pd.read_parquet(previous)
        # Drop one group and add one: the log matches the counts computed here by path.
        changed = pd.concat([index[index["group"] != "src0"], _index(21, 3).tail(3)])
        changed.to_parquet(idx_path)
        caplog.clear()
        split_dataset(idx_path, *out, cv, previous=previous)
    now = pd.read_parquet(out[0])
    before = dict(zip(first["path"], first["fold"], strict=True))
    moved = sum(
        before[p] != f for p, f in zip(now["path"], now["fold"], strict=True) if p in before
    )
    assert f"{moved} of 57 videos changed fold, {57 - moved} kept their fold, 3 new, 3 gone" in (
        caplog.text
    )
    pd.testing.assert_frame_equal(pd.read_parquet(previous), now)
