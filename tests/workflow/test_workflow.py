"""The workflow end to end with real Snakemake, on the tiny overlay (2 folds, 2 epochs).

Every test states what it starts from: ``finished_tiny_run`` (one complete run per session,
never changed) or ``tiny_run_copy`` (a private, up-to-date copy of it to change), or a project
of its own. No test depends on another test or on the order of the file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from tests.workflow.helpers import SNAKEMAKE, TINY, planned_jobs, snakemake

# func_only: the session fixture's own full run (bounded by its snakemake timeout) does not eat
# into the budget of whichever test happens to need it first.
pytestmark = [pytest.mark.workflow, pytest.mark.timeout(600, func_only=True)]

_TINY_CFG = yaml.safe_load(TINY.read_text())
N_SPLITS = _TINY_CFG["cv"]["n_splits"]  # 2
EPOCHS = _TINY_CFG["train"]["epochs"]  # 2
RUN = Path("runs/tiny")
EPOCH_LINE = re.compile(r" epoch (\d+)/(\d+): train loss")
#: The jobs downstream of train (all rerun when any fold is retrained).
RESULTS_JOBS = ("aggregate", "plots", "memory_plot", "benchmarks", "provenance")
#: The train rule's outputs in runs/<exp>/fold_<k>/ (docs/artifacts.md).
TRAIN_OUTPUTS = (
    "metrics.json",
    "predictions.parquet",
    "history.csv",
    "best_model.pt",
    "memory.jsonl",
)


def epochs_trained(log: str) -> list[int]:
    """The epochs a train job's log says it trained, in order."""
    return [int(m.group(1)) for m in EPOCH_LINE.finditer(log)]


def test_full_run_writes_every_stage_artifact(finished_tiny_run: Path) -> None:
    run = finished_tiny_run / RUN
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
        assert list(hist["epoch"]) == list(range(1, EPOCHS + 1))
        assert metrics["epochs_trained"] == EPOCHS
    results = pd.read_feather(run / "kfold_results.feather")
    stat_rows = ["mean", "std", "pooled", "pooled_ci_low", "pooled_ci_high"]
    assert list(results["fold"]) == [*(str(k) for k in range(N_SPLITS)), *stat_rows]
    per_fold = results.iloc[:N_SPLITS]
    assert results.loc[results["fold"] == "mean", "accuracy"].item() == pytest.approx(
        per_fold["accuracy"].mean()
    )
    summary = json.loads((run / "summary.json").read_text())
    assert summary["n_folds"] == N_SPLITS and summary["n_videos"] == len(meta)
    assert (run / "plots/roc_curves.png").stat().st_size > 0
    # No temp files left behind anywhere.
    assert not [p for p in run.rglob("*.tmp")]


def test_second_run_does_nothing(finished_tiny_run: Path) -> None:
    assert planned_jobs(finished_tiny_run) == {}


def test_changing_lr_reruns_only_train_and_results(finished_tiny_run: Path, tmp_path: Path) -> None:
    overlay = tmp_path / "lr.yaml"
    overlay.write_text("train:\n  lr: 0.01\n")
    jobs = planned_jobs(finished_tiny_run, overlays=(str(overlay),))
    assert {j.split("[")[0] for j in jobs} == {"train", *RESULTS_JOBS}
    assert sum(v for j, v in jobs.items() if j.startswith("train")) == N_SPLITS


def test_changing_augment_does_not_resplit(finished_tiny_run: Path, tmp_path: Path) -> None:
    overlay = tmp_path / "aug.yaml"
    overlay.write_text("augment:\n  copies: 2\n")
    jobs = planned_jobs(finished_tiny_run, overlays=(str(overlay),))
    assert {j.split("[")[0] for j in jobs} == {"augment", "train", *RESULTS_JOBS}


@pytest.mark.parametrize(
    "overlay",
    [
        "train:\n  num_workers: 1\n",
        "train:\n  checkpoint_every_s: 5\n  checkpoint_every_n_batches: 3\n",
        "train:\n  device: cpu\n  time_margin_s: 30\n  keep_epoch_checkpoints: 4\n",
        "memory:\n  gc_every_n_batches: 3\n  empty_cache_every_n_batches: 20\n",
    ],
    ids=["workers", "checkpoint-cadence", "device-margin-keep", "gc-cadence"],
)
def test_changing_an_operational_key_reruns_nothing(
    finished_tiny_run: Path, tmp_path: Path, overlay: str
) -> None:
    ops = tmp_path / "ops.yaml"
    ops.write_text(overlay)
    assert planned_jobs(finished_tiny_run, overlays=(str(ops),)) == {}


def test_report(tiny_run_copy: Path) -> None:
    snakemake(tiny_run_copy, "--report", "report.html")
    html = (tiny_run_copy / "report.html").read_text(errors="replace")
    assert "roc_curves.png" in html


def test_dry_run_after_deleting_one_fold_lists_only_that_fold(tiny_run_copy: Path) -> None:
    project = tiny_run_copy
    fold_dir = project / RUN / "fold_1"
    for name in TRAIN_OUTPUTS:
        (fold_dir / name).unlink()
    jobs = planned_jobs(project)
    assert jobs == {"train[fold=1]": 1, **dict.fromkeys(RESULTS_JOBS, 1)}


def test_rerun_one_fold_by_target(finished_tiny_run: Path, tiny_run_copy: Path) -> None:
    project = tiny_run_copy
    run = project / RUN
    before = {k: (run / f"fold_{k}/metrics.json").stat().st_mtime_ns for k in range(N_SPLITS)}
    results_before = (run / "kfold_results.feather").stat().st_mtime_ns
    snakemake(project, "--forcerun", str(RUN / "fold_0/metrics.json"))
    after = {k: (run / f"fold_{k}/metrics.json").stat().st_mtime_ns for k in range(N_SPLITS)}
    assert after[0] > before[0]
    assert after[1] == before[1]
    assert (run / "kfold_results.feather").stat().st_mtime_ns > results_before
    # A finished fold is retrained from scratch when forced: every epoch again, no extra rows.
    log = (run / "logs/train/fold_0.log").read_text()
    assert "fold 0: previous run of this fold completed; fresh start" in log, log
    assert epochs_trained(log) == list(range(1, EPOCHS + 1)), log
    assert list(pd.read_csv(run / "fold_0/history.csv")["epoch"]) == list(range(1, EPOCHS + 1))
    ref = _state(finished_tiny_run / RUN / "fold_0/best_model.pt")
    got = _state(run / "fold_0/best_model.pt")
    assert all(torch.equal(ref[k], got[k]) for k in ref), "a fresh retrain must reproduce fold 0"


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model_state"]


@pytest.mark.timeout(1200, func_only=True)  # up to 300 s to the kill, then a full rerun
def test_sigkill_mid_training_then_rerun_incomplete_is_bit_identical(
    finished_tiny_run: Path, tiny_run_copy: Path
) -> None:
    """Kill the whole Snakemake process group while fold 0 trains; --rerun-incomplete resumes
    at the checkpoint's position and ends bit-identical to the uninterrupted run.

    Starts from a copy of the finished run without fold 0's training (its train outputs and
    checkpoints removed) and targets fold 0, so Snakemake trains it again on the same upstream
    artifacts.
    """
    proj = tiny_run_copy
    target = str(RUN / "fold_0/metrics.json")
    shutil.rmtree(proj / RUN / "checkpoints/fold_0")
    for name in TRAIN_OUTPUTS:
        (proj / RUN / "fold_0" / name).unlink()
    assert planned_jobs(proj, target) == {"train[fold=0]": 1}
    ckpt = proj / RUN / "checkpoints/fold_0/latest_checkpoint.pt"
    cmd = [SNAKEMAKE, "--configfile", "tiny.yaml", "--cores", "1", target]
    proc = subprocess.Popen(
        cmd, cwd=proj, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 300
        while not ckpt.exists():
            assert proc.poll() is None, "snakemake ended before fold 0 wrote a checkpoint"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:  # whatever failed above, leave no Snakemake or training process behind
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert not (proj / RUN / "fold_0/metrics.json").exists(), "fold 0 finished before the kill"
    state = torch.load(ckpt, weights_only=True)  # where the killed job had got to
    epoch, batch = state["epoch"], state["batch_in_epoch"]
    assert not state.get("complete") and (epoch, batch) != (0, 0), (epoch, batch)
    # A SIGKILLed Snakemake leaves its lock behind: the documented recovery is unlock + rerun.
    snakemake(proj, "--unlock")
    snakemake(proj, target, "--rerun-incomplete")
    log = (proj / RUN / "logs/train/fold_0.log").read_text()
    where = f"end of epoch {epoch}" if batch == 0 else f"epoch {epoch + 1} batch {batch}"
    assert f"fold 0: resuming from latest_checkpoint.pt ({where})" in log, log
    # Only the unfinished epochs ran again, and history.csv lists each epoch once.
    assert epochs_trained(log) == list(range(epoch + 1, EPOCHS + 1)), log
    hist = pd.read_csv(proj / RUN / "fold_0/history.csv")
    assert list(hist["epoch"]) == list(range(1, EPOCHS + 1))
    ref = _state(finished_tiny_run / RUN / "fold_0/best_model.pt")
    got = _state(proj / RUN / "fold_0/best_model.pt")
    assert ref.keys() == got.keys()
    for name in ref:
        assert torch.equal(ref[name], got[name]), f"{name} differs after resume"
