"""Nested cross-validation through real Snakemake: a selection-corrected estimate.

Two real runs of the demo:

- **real labels**, the base config alone, 3 outer folds x 2 inner folds on 64 demo videos with
  every fake visible (15 epochs, so the models learn): the selection-corrected estimate (pooled
  outer test) lies within a few points of the plain CV estimate, the run is complete (a dry run
  plans nothing) and one outer fold is rerun by its target alone;
- **shuffled labels** (a metadata table with the demo's labels permuted), six variants that
  differ only in ``train.seed``, 2 outer x 2 inner folds: no model can learn, yet the naive
  best of six CV scores is reported beside a selection-corrected ROC-AUC whose 95 % CI contains
  0.5.

Train jobs cost mostly their start-up (~4 s each), so the folds and outer folds are few.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fvc.predict import predict_files
from tests.workflow.helpers import make_project, planned_jobs, snakemake

pytestmark = [pytest.mark.workflow, pytest.mark.timeout(1500)]

REAL = """experiment: real
data:
  demo:
    sources: 16
    subtle_share: 0
cv:
  n_splits: 2
  outer_splits: 3
train:
  epochs: 15
"""
SHUFFLED = """experiment: shuffled
data:
  metadata: shuffled.csv
cv:
  n_splits: 2
  outer_splits: 2
train:
  epochs: 2
sweep:
""" + "".join(f"  seed{s}: {{train: {{seed: {s}}}}}\n" for s in range(1, 6))


def _project(tmp_path: Path, name: str, text: str) -> Path:
    project = make_project(tmp_path / "proj")
    (project / name).write_text(text)
    return project


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = _project(tmp_path_factory.mktemp("nested"), "real.yaml", REAL)
    snakemake(project, overlays=("real.yaml",), timeout=1200)
    return project


def test_real_labels_nested_estimate_is_close_to_the_plain_one(real_run: Path) -> None:
    run = real_run / "runs/real"
    summary = json.loads((run / "nested_summary.json").read_text())
    plain = json.loads((run / "summary.json").read_text())
    corrected = summary["selection_corrected"]["roc_auc"]
    assert abs(corrected - plain["pooled_out_of_fold"]["roc_auc"]) <= 0.05, (corrected, plain)
    assert summary["selected"] == {"0": "base", "1": "base", "2": "base"}
    assert summary["naive_best_cv"]["variant"] == "base"
    assert summary["naive_best_cv"]["pooled_out_of_fold"] == plain["pooled_out_of_fold"]
    lo, hi = summary["selection_corrected"]["ci95"]["roc_auc"]
    assert lo <= corrected <= hi and summary["selection_corrected"]["ci95"]["unit"] == "group"
    table = pd.read_feather(run / "nested_results.feather")
    stats = ["mean", "std", "pooled", "pooled_ci_low", "pooled_ci_high"]
    assert table["outer_fold"].tolist() == ["0", "1", "2", *stats]
    assert {"selected_variant", "inner_score", "roc_auc", "eer", "threshold", "n_test"} <= set(
        table.columns
    )
    pooled = table.set_index("outer_fold").loc["pooled"]
    assert pooled["roc_auc"] == pytest.approx(corrected) and pooled["n_test"] == 64
    # every video is scored once, by the model of the outer fold that held it out
    tests = [pd.read_parquet(run / f"outer_{o}/test_predictions.parquet") for o in range(3)]
    outer = pd.read_parquet(run / "outer_splits.parquet").set_index("video_id")["outer_fold"]
    for o, part in enumerate(tests):
        assert (part["video_id"].map(outer) == o).all()
    assert sum(len(t) for t in tests) == 64
    # the inner folds never saw their outer fold's test videos
    inner = pd.read_parquet(run / "outer_1/splits.parquet")
    assert not set(inner["video_id"]) & set(tests[1]["video_id"])
    assert (run / "outer_1/final/model.pt").is_file()
    assert "Honest estimate" in (run / "nested_results.html").read_text()


def test_a_finished_nested_run_plans_nothing_and_one_outer_fold_reruns_alone(
    real_run: Path,
) -> None:
    assert planned_jobs(real_run, overlays=("real.yaml",)) == {}
    jobs = planned_jobs(
        real_run, "--forcerun", "runs/real/outer_1/test_metrics.json", overlays=("real.yaml",)
    )
    # the forced job and what depends on it; no other outer fold's work
    assert {j.split("[")[0] for j in jobs} == {"outer_test", "nested_aggregate", "provenance"}
    assert all("outer=0" not in j and "outer=2" not in j for j in jobs), jobs


def test_fvc_predict_on_a_nested_run_uses_the_plain_runs_models(real_run: Path) -> None:
    videos = sorted((real_run / "runs/demo_data/videos").glob("*.mp4"))[:2]
    table = predict_files(real_run / "runs/real", videos)
    assert table.attrs["scored_with"].startswith("2 fold models (")
    assert str(real_run / "runs/real/fold_<k>") in table.attrs["scored_with"]
    assert table["p_fake"].notna().all()


def test_shuffled_labels_selection_corrected_ci_contains_chance(tmp_path: Path) -> None:
    project = _project(tmp_path, "shuffled.yaml", SHUFFLED)
    snakemake(project, "runs/demo_data/metadata.csv", timeout=300)
    demo = pd.read_csv(project / "runs/demo_data/metadata.csv")
    labels = np.random.default_rng(11).permutation(demo["label"].to_numpy())
    demo.assign(label=labels, path="runs/demo_data/" + demo["path"]).to_csv(
        project / "shuffled.csv", index=False
    )
    target = "runs/shuffled/nested_summary.json"
    snakemake(project, target, overlays=("shuffled.yaml",), timeout=1200)
    summary = json.loads((project / "runs/shuffled/nested_summary.json").read_text())
    lo, hi = summary["selection_corrected"]["ci95"]["roc_auc"]
    assert lo <= 0.5 <= hi, summary["selection_corrected"]
    naive = summary["naive_best_cv"]
    assert naive["metric"] == "roc_auc" and len(naive["cv_scores"]) == 6
    assert naive["value"] == max(naive["cv_scores"].values())  # the winner of six seeds
    assert set(summary["selected"]) == {"0", "1"}
    assert all(v in naive["cv_scores"] for v in summary["selected"].values())
