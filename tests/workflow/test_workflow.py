"""The workflow end to end with real Snakemake, on the tiny overlay (2 folds, 2 epochs).

One full run is shared by the tests of this module (module-scoped fixture); tests that change the
project's state run last in the file and restore what they touch.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from tests.workflow.helpers import SNAKEMAKE, make_project, planned_jobs, snakemake

pytestmark = pytest.mark.workflow

N_SPLITS = 2
RUN = Path("runs/tiny")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    proj = make_project(tmp_path_factory.mktemp("wf") / "proj")
    snakemake(proj)
    return proj


def test_full_run_writes_every_stage_artifact(project: Path) -> None:
    run = project / RUN
    meta = pd.read_parquet(run / "data/metadata.parquet")
    assert len(meta) == 6 * 2 * 2  # sources * clips_per_source * {real, fake}
    assert set(meta["label"]) == {0, 1}
    splits = pd.read_parquet(run / "splits.parquet")
    assert sorted(splits["fold"].unique()) == list(range(N_SPLITS))
    # Group-aware: no source appears in two folds.
    assert (splits.groupby("group")["fold"].nunique() == 1).all()
    for k in range(N_SPLITS):
        manifest = pd.read_parquet(run / f"fold_{k}/augment/manifest.parquet")
        val_ids = set(splits.loc[splits["fold"] == k, "video_id"])
        assert not val_ids & set(manifest["video_id"]), "validation videos were augmented"
        metrics = json.loads((run / f"fold_{k}/metrics.json").read_text())
        assert metrics["fold"] == k
        preds = pd.read_parquet(run / f"fold_{k}/predictions.parquet")
        assert set(preds["video_id"]) == val_ids
        assert preds["prob_fake"].between(0, 1).all()
        ckpt = torch.load(run / f"fold_{k}/best_model.pt", weights_only=True)
        assert "model_state" in ckpt
        hist = pd.read_csv(run / f"fold_{k}/history.csv")
        assert list(hist["epoch"]) == [1, 2] or list(hist["epoch"]) == [0, 1]
    results = pd.read_feather(run / "kfold_results.feather")
    assert list(results["fold"]) == [*(str(k) for k in range(N_SPLITS)), "mean", "std"]
    per_fold = results.iloc[:N_SPLITS]
    assert results.loc[results["fold"] == "mean", "accuracy"].item() == pytest.approx(
        per_fold["accuracy"].mean()
    )
    summary = json.loads((run / "summary.json").read_text())
    assert summary["n_folds"] == N_SPLITS and summary["n_videos"] == len(meta)
    assert (run / "plots/roc_curves.png").stat().st_size > 0
    # No temp files left behind anywhere.
    assert not [p for p in run.rglob("*.tmp")]


def test_second_run_does_nothing(project: Path) -> None:
    assert planned_jobs(project) == {}


def test_changing_lr_reruns_only_train_and_results(project: Path) -> None:
    overlay = project / "lr.yaml"
    overlay.write_text("train:\n  lr: 0.01\n")
    jobs = planned_jobs(project, overlays=("lr.yaml",))
    assert {j.split("[")[0] for j in jobs} == {"train", "aggregate", "plots", "provenance"}
    assert sum(v for j, v in jobs.items() if j.startswith("train")) == N_SPLITS


def test_changing_augment_does_not_resplit(project: Path) -> None:
    overlay = project / "aug.yaml"
    overlay.write_text("augment:\n  copies: 2\n")
    jobs = planned_jobs(project, overlays=("aug.yaml",))
    assert {j.split("[")[0] for j in jobs} == {
        "augment",
        "train",
        "aggregate",
        "plots",
        "provenance",
    }


def test_report(project: Path) -> None:
    snakemake(project, "--report", "report.html")
    html = (project / "report.html").read_text(errors="replace")
    assert "roc_curves.png" in html


def test_dry_run_after_deleting_one_fold_lists_only_that_fold(project: Path) -> None:
    fold_dir = project / RUN / "fold_1"
    for name in ("metrics.json", "predictions.parquet", "history.csv", "best_model.pt"):
        (fold_dir / name).unlink()
    jobs = planned_jobs(project)
    assert jobs == {"train[fold=1]": 1, "aggregate": 1, "plots": 1, "provenance": 1}
    snakemake(project)
    assert planned_jobs(project) == {}


def test_rerun_one_fold_by_target(project: Path) -> None:
    run = project / RUN
    before = {k: (run / f"fold_{k}/metrics.json").stat().st_mtime_ns for k in range(N_SPLITS)}
    results_before = (run / "kfold_results.feather").stat().st_mtime_ns
    snakemake(project, "--forcerun", str(RUN / "fold_0/metrics.json"))
    after = {k: (run / f"fold_{k}/metrics.json").stat().st_mtime_ns for k in range(N_SPLITS)}
    assert after[0] > before[0]
    assert after[1] == before[1]
    assert (run / "kfold_results.feather").stat().st_mtime_ns > results_before
    log = (run / "logs/train/fold_0.log").read_text()
    assert "fresh" in log.lower()  # a finished fold is retrained from scratch when forced


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model_state"]


def test_sigkill_mid_training_then_rerun_incomplete_is_bit_identical(
    project: Path, tmp_path: Path
) -> None:
    """Kill the whole Snakemake process group while fold 0 trains; --rerun-incomplete resumes."""
    proj = make_project(tmp_path / "killed")
    ckpt_dir = proj / RUN / "checkpoints/fold_0"
    cmd = [SNAKEMAKE, "--configfile", "tiny.yaml", "--cores", "1"]
    proc = subprocess.Popen(
        cmd, cwd=proj, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while not (ckpt_dir / "latest_checkpoint.pt").exists():
        assert proc.poll() is None, "snakemake ended before fold 0 wrote a checkpoint"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (proj / RUN / "fold_0/metrics.json").exists(), "fold 0 finished before the kill"
    # A SIGKILLed Snakemake leaves its lock behind: the documented recovery is unlock + rerun.
    snakemake(proj, "--unlock")
    snakemake(proj, "--rerun-incomplete")
    log = (proj / RUN / "logs/train/fold_0.log").read_text().lower()
    assert "resum" in log
    for k in range(N_SPLITS):
        ref = _state(project / RUN / f"fold_{k}/best_model.pt")
        got = _state(proj / RUN / f"fold_{k}/best_model.pt")
        assert ref.keys() == got.keys()
        for name in ref:
            assert torch.equal(ref[name], got[name]), f"fold {k}: {name} differs after resume"
