"""kfold_results.feather with repeated K-fold: one row per (repeat, fold), pooled mean/std."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fvc.metrics import binary_metrics
from fvc.report import aggregate_folds


def _files(tmp_path, repeat: int, k: int, prob: np.ndarray):
    labels = np.array([0, 1] * 3)
    # The same six videos are split into two folds anew in every repeat.
    ids = [f"v{i}" for i in range(6)]
    val = ids[k * 3 : k * 3 + 3]
    preds = pd.DataFrame({"video_id": val, "label": labels[:3], "prob_fake": prob[:3], "fold": k})
    p = tmp_path / f"pred_{repeat}_{k}.parquet"
    preds.to_parquet(p)
    m = {"fold": k, "val_loss": 0.1 * (repeat + 1), **binary_metrics(labels, prob)}
    mp = tmp_path / f"metrics_{repeat}_{k}.json"
    mp.write_text(json.dumps(m))
    return mp, p, m


def test_repeats_get_their_own_rows(tmp_path) -> None:
    rng = np.random.default_rng(0)
    files, repeats = [], []
    for r in range(2):
        for k in range(2):
            files.append(_files(tmp_path, r, k, rng.random(6)))
            repeats.append(r)
    out = tmp_path / "r.feather"
    summary = aggregate_folds(
        [f[0] for f in files],
        [f[1] for f in files],
        out,
        tmp_path / "s.json",
        repeats=repeats,
        out_html=tmp_path / "r.html",
    )
    table = pd.read_feather(out)
    stat_rows = ["mean", "std", "pooled", "pooled_ci_low", "pooled_ci_high"]
    assert list(table["repeat"]) == ["0", "0", "1", "1", *[""] * len(stat_rows)]
    assert list(table["fold"]) == ["0", "1", "0", "1", *stat_rows]
    losses = [f[2]["val_loss"] for f in files]
    stats = table.set_index("fold")
    assert stats.loc["mean", "val_loss"] == pytest.approx(np.mean(losses))
    assert stats.loc["std", "val_loss"] == pytest.approx(np.std(losses, ddof=1))
    assert summary["n_folds"] == 4 and summary["n_videos"] == 6
    # Pooled: every repeat's predictions (each video twice); the bootstrap resamples videos
    # with both their predictions.
    assert summary["ci95"]["unit"] == "video"
    preds = pd.concat([pd.read_parquet(f[1]) for f in files])
    pooled = binary_metrics(preds["label"], preds["prob_fake"], summary["threshold"]["value"])
    assert summary["pooled_out_of_fold"]["roc_auc"] == pytest.approx(pooled["roc_auc"])
    assert summary["pooled_out_of_fold"]["tp"] == pooled["tp"]
    assert "r1/0" in (tmp_path / "r.html").read_text()


def test_coverage_is_checked_per_repeat(tmp_path) -> None:
    rng = np.random.default_rng(3)
    files = [_files(tmp_path, r, k, rng.random(6)) for r in range(2) for k in range(2)]
    ids = [f"v{i}" for i in range(6)]
    splits = []
    for r in range(2):
        p = tmp_path / f"splits_{r}.parquet"
        pd.DataFrame({"video_id": ids, "fold": [0, 0, 0, 1, 1, 1], "group": ids}).to_parquet(p)
        splits.append(p)
    paths = [f[0] for f in files], [f[1] for f in files]
    aggregate_folds(
        *paths, tmp_path / "ok.feather", tmp_path / "ok.json", splits, repeats=[0, 0, 1, 1]
    )
    # Repeat 1 drew other folds: its predictions no longer match its splits.
    pd.DataFrame({"video_id": ids, "fold": [1, 0, 0, 1, 1, 0], "group": ids}).to_parquet(splits[1])
    with pytest.raises(ValueError, match="other than their validation fold"):
        aggregate_folds(
            *paths, tmp_path / "x.feather", tmp_path / "x.json", splits, repeats=[0, 0, 1, 1]
        )


def test_single_repeat_is_plain_kfold(tmp_path) -> None:
    rng = np.random.default_rng(1)
    files = [_files(tmp_path, 0, k, rng.random(6)) for k in range(2)]
    out = tmp_path / "r.feather"
    aggregate_folds(
        [f[0] for f in files], [f[1] for f in files], out, tmp_path / "s.json", repeats=[0, 0]
    )
    assert "repeat" not in pd.read_feather(out).columns


def test_a_video_twice_in_one_repeat_is_still_an_error(tmp_path) -> None:
    rng = np.random.default_rng(2)
    files = [_files(tmp_path, r, k, rng.random(6)) for r in range(2) for k in range(2)]
    paths = [f[0] for f in files], [f[1] for f in files]
    # Across repeats every video is predicted once per repeat: fine.
    aggregate_folds(*paths, tmp_path / "ok.feather", tmp_path / "ok.json", repeats=[0, 0, 1, 1])
    # Within one repeat a video predicted by two folds means stale splits.
    pd.read_parquet(files[2][1]).assign(fold=1).to_parquet(files[3][1])
    with pytest.raises(ValueError, match="more than one fold"):
        aggregate_folds(*paths, tmp_path / "x.feather", tmp_path / "x.json", repeats=[0, 0, 1, 1])
