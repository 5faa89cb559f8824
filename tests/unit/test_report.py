"""Aggregation of per-fold results into kfold_results.feather and summary.json."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fvc.metrics import binary_metrics, choose_threshold, score_metrics
from fvc.report import STAT_ROWS, aggregate_folds


def _fold_files(tmp_path, k: int, rng: np.random.Generator):
    labels = np.array([0, 1] * 5)
    prob = np.clip(labels * 0.6 + rng.random(10) * 0.5, 0, 1)
    preds = pd.DataFrame(
        {
            "video_id": [f"v{k}{i:03d}" for i in range(10)],
            "path": [f"/x/{k}_{i}.mp4" for i in range(10)],
            "label": labels,
            "prob_fake": prob,
            "pred": (prob >= 0.5).astype(int),
            "fold": k,
        }
    )
    p_path = tmp_path / f"pred{k}.parquet"
    preds.to_parquet(p_path)
    m = {"fold": k, "val_loss": 0.5 + k, **binary_metrics(labels, prob), "best_epoch": 1}
    m_path = tmp_path / f"metrics{k}.json"
    m_path.write_text(json.dumps(m))
    h_path = tmp_path / f"history{k}.csv"
    pd.DataFrame(
        {"epoch": [1, 2], "train_loss": [0.7, 0.5], "val_loss": [0.7, 0.6], "roc_auc": [0.6, 0.8]}
    ).to_csv(h_path, index=False)
    return m_path, p_path, h_path, m


def _splits(tmp_path, files, groups=None) -> str:
    preds = pd.concat([pd.read_parquet(f[1]) for f in files], ignore_index=True)
    splits = preds[["video_id", "path", "label", "fold"]].assign(
        group=groups if groups is not None else preds["video_id"], clip_row=range(len(preds))
    )
    path = tmp_path / "splits.parquet"
    splits.to_parquet(path)
    return str(path)


def _aggregate(tmp_path, files, splits=None, **cfg):
    return aggregate_folds(
        [f[0] for f in files],
        [f[1] for f in files],
        tmp_path / "kfold_results.feather",
        tmp_path / "summary.json",
        splits_path=splits,
        cfg={"bootstrap_samples": 200, **cfg},
        out_html=tmp_path / "kfold_results.html",
    )


def test_aggregate_mean_std_and_summary(tmp_path) -> None:
    rng = np.random.default_rng(0)
    files = [_fold_files(tmp_path, k, rng) for k in range(3)]
    summary = _aggregate(tmp_path, files, _splits(tmp_path, files))
    table = pd.read_feather(tmp_path / "kfold_results.feather")
    assert list(table["fold"]) == ["0", "1", "2", *STAT_ROWS]
    stats = table.set_index("fold")
    aucs = [f[3]["roc_auc"] for f in files]
    assert stats.loc["mean", "roc_auc"] == pytest.approx(np.mean(aucs))
    assert stats.loc["std", "roc_auc"] == pytest.approx(np.std(aucs, ddof=1))
    assert stats.loc["std", "val_loss"] == pytest.approx(1.0)
    assert summary["n_folds"] == 3 and summary["n_videos"] == 30
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert on_disk["mean"]["roc_auc"] == pytest.approx(np.mean(aucs))


def test_new_metrics_per_fold_pooled_and_with_intervals(tmp_path) -> None:
    rng = np.random.default_rng(4)
    files = [_fold_files(tmp_path, k, rng) for k in range(3)]
    splits = _splits(tmp_path, files)
    summary = _aggregate(tmp_path, files, splits, threshold="youden", group_column=None)
    stats = pd.read_feather(tmp_path / "kfold_results.feather").set_index("fold")
    preds = pd.concat([pd.read_parquet(f[1]) for f in files], ignore_index=True)
    for k in range(3):
        fold = preds[preds["fold"] == k]
        want = score_metrics(fold["label"], fold["prob_fake"])
        for name in ("average_precision", "eer", "eer_threshold", "log_loss", "brier"):
            assert stats.loc[str(k), name] == pytest.approx(want[name]), (k, name)
        assert stats.loc[str(k), "threshold"] == 0.5  # train's metrics.json use 0.5
    thr = choose_threshold(preds["label"], preds["prob_fake"], "youden")
    assert summary["threshold"] == {"method": "youden", "value": pytest.approx(thr)}
    pooled = binary_metrics(preds["label"], preds["prob_fake"], thr)
    assert stats.loc["pooled", "threshold"] == pytest.approx(thr)
    assert stats.loc["pooled", "accuracy"] == pytest.approx(pooled["accuracy"])
    assert summary["pooled_out_of_fold"]["roc_auc"] == pytest.approx(pooled["roc_auc"])
    for name in ("roc_auc", "average_precision", "accuracy"):
        lo, hi = summary["ci95"][name]
        assert lo <= summary["pooled_out_of_fold"][name] <= hi
        assert (stats.loc["pooled_ci_low", name], stats.loc["pooled_ci_high", name]) == (lo, hi)
    assert summary["ci95"]["unit"] == "video" and summary["ci95"]["resamples"] == 200
    assert pd.isna(stats.loc["pooled_ci_low", "f1"])  # intervals only where computed
    page = (tmp_path / "kfold_results.html").read_text()
    lo, hi = summary["ci95"]["roc_auc"]
    assert f"<b>youden</b> threshold <b>{thr:.4f}</b>" in page
    assert f"roc_auc [{lo:.3f}, {hi:.3f}]" in page
    assert page.count("<th>pooled_ci_high</th>") == 1 and "<th>average_precision</th>" in page


def test_confusion_counts_and_sizes_are_integers(tmp_path) -> None:
    rng = np.random.default_rng(5)
    files = [_fold_files(tmp_path, k, rng) for k in range(2)]
    summary = _aggregate(tmp_path, files, _splits(tmp_path, files))
    table = pd.read_feather(tmp_path / "kfold_results.feather")
    for col in ("tn", "fp", "fn", "tp", "best_epoch"):
        assert pd.api.types.is_integer_dtype(table[col]), col
    stats = table.set_index("fold")
    assert pd.isna(stats.loc["mean", "tp"])  # a mean of counts is not a count
    pooled = summary["pooled_out_of_fold"]
    assert stats.loc["pooled", ["tn", "fp", "fn", "tp"]].sum() == 20
    text = (tmp_path / "summary.json").read_text()
    for name in ("tn", "fp", "fn", "tp"):
        assert type(pooled[name]) is int
        assert f'"{name}": {pooled[name]},' in text or f'"{name}": {pooled[name]}\n' in text


def test_groups_are_resampled_whole_when_a_group_column_is_set(tmp_path) -> None:
    rng = np.random.default_rng(6)
    files = [_fold_files(tmp_path, k, rng) for k in range(3)]
    # One group per fold: right about every video of group a, wrong about every one of b,
    # guessing in c. Resampling videos sees 30 independent ones; resampling groups sees that the
    # accuracy hinges on which of three groups were drawn.
    for k, f in enumerate(files):
        df = pd.read_parquet(f[1])
        prob = [df["label"] * 0.8 + 0.1, (1 - df["label"]) * 0.8 + 0.1, rng.random(10)][k]
        df.assign(prob_fake=prob).to_parquet(f[1])
    groups = np.repeat(["a", "b", "c"], 10)
    splits = _splits(tmp_path, files, groups=groups)
    flat = _aggregate(tmp_path, files, splits, group_column=None)["ci95"]
    grouped = _aggregate(tmp_path, files, splits, group_column="group")["ci95"]
    assert (flat["unit"], grouped["unit"]) == ("video", "group")
    width = {s: c["accuracy"][1] - c["accuracy"][0] for s, c in (("f", flat), ("g", grouped))}
    assert width["g"] > 1.5 * width["f"]


def test_a_video_missing_from_the_predictions_is_an_error_naming_it(tmp_path) -> None:
    rng = np.random.default_rng(2)
    files = [_fold_files(tmp_path, k, rng) for k in range(2)]
    splits = _splits(tmp_path, files)
    short = pd.read_parquet(files[1][1])
    short[short["video_id"] != "v1003"].to_parquet(files[1][1])
    with pytest.raises(ValueError, match=r"1 video\(s\) of splits.parquet have no .*\(v1003\)"):
        _aggregate(tmp_path, files, splits)
    assert not (tmp_path / "kfold_results.feather").exists()


def test_a_prediction_outside_the_splits_or_from_the_wrong_fold_is_an_error(tmp_path) -> None:
    rng = np.random.default_rng(3)
    files = [_fold_files(tmp_path, k, rng) for k in range(2)]
    splits_path = _splits(tmp_path, files)
    splits = pd.read_parquet(splits_path)
    splits[splits["video_id"] != "v0007"].to_parquet(splits_path)
    with pytest.raises(ValueError, match=r"not in splits.parquet \(v0007\)"):
        _aggregate(tmp_path, files, splits_path)
    splits.assign(fold=np.where(splits["video_id"] == "v0002", 1, splits["fold"])).to_parquet(
        splits_path
    )
    with pytest.raises(ValueError, match=r"other than their validation fold.*\(v0002\)"):
        _aggregate(tmp_path, files, splits_path)


def test_a_video_predicted_by_two_folds_is_an_error(tmp_path) -> None:
    rng = np.random.default_rng(1)
    files = [_fold_files(tmp_path, k, rng) for k in range(2)]
    dup = pd.read_parquet(files[0][1]).assign(fold=1)
    dup.to_parquet(files[1][1])
    splits = _splits(tmp_path, [files[0], (None, files[1][1])])
    with pytest.raises(ValueError, match=r"10 video\(s\) were predicted by more than one fold"):
        _aggregate(tmp_path, files, splits)
    with pytest.raises(ValueError, match=r"more than one fold \(v0000, v0001, v0002, v0003, v0004"):
        _aggregate(tmp_path, files)  # without splits too
    assert not (tmp_path / "kfold_results.feather").exists()
