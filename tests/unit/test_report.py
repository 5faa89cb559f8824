"""Aggregation of per-fold results into kfold_results.feather and summary.json."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fvc.metrics import binary_metrics
from fvc.report import aggregate_folds, plot_roc_curves, plot_training_curves


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


def test_aggregate_mean_std_and_summary(tmp_path) -> None:
    rng = np.random.default_rng(0)
    files = [_fold_files(tmp_path, k, rng) for k in range(3)]
    out = tmp_path / "kfold_results.feather"
    summary = aggregate_folds(
        [f[0] for f in files], [f[1] for f in files], out, tmp_path / "summary.json"
    )
    table = pd.read_feather(out)
    assert list(table["fold"]) == ["0", "1", "2", "mean", "std"]
    aucs = [f[3]["roc_auc"] for f in files]
    assert table.set_index("fold").loc["mean", "roc_auc"] == pytest.approx(np.mean(aucs))
    assert table.set_index("fold").loc["std", "roc_auc"] == pytest.approx(np.std(aucs, ddof=1))
    assert table.set_index("fold").loc["std", "val_loss"] == pytest.approx(1.0)
    assert summary["n_folds"] == 3 and summary["n_videos"] == 30
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["mean"]["roc_auc"] == pytest.approx(np.mean(aucs))
    plot_roc_curves([f[1] for f in files], tmp_path / "roc.png")
    plot_training_curves([f[2] for f in files], tmp_path / "curves.png")
    assert (tmp_path / "roc.png").read_bytes()[:4] == b"\x89PNG"


def test_a_video_predicted_by_two_folds_is_an_error(tmp_path) -> None:
    rng = np.random.default_rng(1)
    files = [_fold_files(tmp_path, k, rng) for k in range(2)]
    dup = pd.read_parquet(files[0][1]).assign(fold=1)
    dup.to_parquet(files[1][1])
    with pytest.raises(ValueError, match="more than one fold"):
        aggregate_folds(
            [f[0] for f in files],
            [f[1] for f in files],
            tmp_path / "r.feather",
            tmp_path / "s.json",
        )
    assert not (tmp_path / "r.feather").exists()
