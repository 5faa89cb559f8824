"""The workflow on a real single-node SLURM cluster through ``--profile profiles/slurm``.

Each test copies the workflow into its own directory and drives real ``sbatch``/``srun`` via
snakemake-executor-plugin-slurm; job facts come from ``squeue`` (finished jobs stay listed for
MinJobAge = 600 s on the test cluster) and from the plugin's per-job logs
(``.snakemake/slurm_logs/rule_train/<fold>/<jobid>.log``, which keep each attempt's output:
Snakemake empties the rule's own log file before a retry). Nothing is mocked, and no test
asserts on wall time: the machine is shared; time limits only decide *when* SLURM interrupts.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.slurm.conftest import (
    SlurmJob,
    SnakemakeRun,
    new_project,
    overlay_profile,
    profile_args,
    run_ids,
    squeue_jobs,
)
from tests.workflow.helpers import planned_jobs

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]

RUN = Path("runs/tiny")
TINY = ["--configfile", "tiny.yaml"]  # last on the command line: --configfile takes a list
LARGER = {"data": {"size": 64, "num_frames": 8}}  # ~1 s per epoch instead of ~0.1 s
EPOCH_LINE = re.compile(r" epoch (\d+)/(\d+): train loss")
RESUME_LINE = re.compile(
    r"fold \d+: resuming from \S+ \((?:epoch (\d+) batch (\d+)|end of epoch (\d+))\)"
)


def resume_point(log: str) -> tuple[str, str] | None:
    """(epoch, batch) a job resumed at; "end of epoch E" is the same point as epoch E+1 batch 0
    (a stop that lands between epochs, e.g. a scancel during validation)."""
    m = RESUME_LINE.search(log)
    if m is None:
        return None
    if m.group(3) is not None:
        return str(int(m.group(3)) + 1), "0"
    return m.group(1), m.group(2)


STARTED = re.compile(r"fold \d+: (no checkpoint; fresh start|resuming from)")


def prebuild(project: Path, *targets: str) -> None:
    """Build the data stages locally, so the SLURM part of a test is only what it is about."""
    SnakemakeRun(project, ["--cores", "2", *targets, *TINY], "prebuild").check(timeout=300)


def job_log(project: Path, job: SlurmJob) -> str:
    """The plugin's log of one SLURM job (one attempt): the script's stderr is in it."""
    return (
        project / f".snakemake/slurm_logs/rule_{job.rule}/{job.wildcards}/{job.jobid}.log"
    ).read_text()


def assert_each_epoch_trained_once(project: Path, jobs: list[SlurmJob], epochs: int) -> None:
    """Over all attempts every epoch finished exactly once, and history.csv lists them all."""
    trained = [int(m.group(1)) for j in jobs for m in EPOCH_LINE.finditer(job_log(project, j))]
    assert sorted(trained) == list(range(1, epochs + 1)), f"epochs trained: {trained}"
    fold = jobs[0].wildcards
    hist = pd.read_csv(project / RUN / f"fold_{fold}/history.csv")
    assert list(hist["epoch"]) == list(range(1, epochs + 1))


def seconds_per_epoch(project: Path, fold: int = 0) -> float:
    """Measure this machine's speed on the prebuilt fold (3 epochs, 1 thread, outside SLURM)."""
    cfg = yaml.safe_load((project / "tiny.yaml").read_text())
    scratch = project / "calibration"
    scratch.mkdir()
    (scratch / "cfg.yaml").write_text(yaml.safe_dump({"train": {**cfg["train"], "epochs": 3}}))
    data, aug = project / RUN / "data", project / RUN / f"fold_{fold}/augment"
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "fvc.train", "--config", str(scratch / "cfg.yaml")),
            *("--fold", str(fold), "--threads", "1"),
            *("--clips", str(data / "clips.npy"), "--index", str(data / "clips.parquet")),
            *("--splits", str(project / RUN / "splits.parquet")),
            *(
                "--aug-clips",
                str(aug / "clips.npy"),
                "--aug-manifest",
                str(aug / "manifest.parquet"),
            ),
            *("--out-dir", str(scratch / "out"), "--checkpoint-dir", str(scratch / "ckpt")),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    secs = [float(s) for s in re.findall(r" epoch \d+/3: .*, ([\d.]+) s$", proc.stderr, re.M)]
    assert len(secs) == 3, proc.stderr[-3000:]
    return max(0.05, sum(secs[1:]) / 2)  # epoch 1 includes warm-up


def test_profile_run_matches_local_run(tmp_path: Path) -> None:
    """Tiny config end to end via the profile: one SLURM job per fold, same results as local."""
    local = new_project(tmp_path, "local")
    slurm = new_project(tmp_path, "slurm")
    # The local reference runs alongside: the SLURM run mostly waits on status checks.
    local_run = SnakemakeRun(local, ["--cores", "1", *TINY], "local")
    out = SnakemakeRun(slurm, [*profile_args(), *TINY], "slurm").check(timeout=600)
    local_run.check(timeout=600)

    jobs = squeue_jobs(run_ids(out))
    train = [j for j in jobs if j.rule == "train"]
    assert sorted(j.wildcards for j in train) == ["0", "1"], jobs
    assert len({j.jobid for j in train}) == 2, "each fold must be its own SLURM job"
    assert all(j.state == "COMPLETED" for j in jobs), jobs
    assert all(j.tres == "gres:gpu:1" for j in train), "train jobs must request one GPU"
    assert sorted(j.wildcards for j in jobs if j.rule == "augment") == ["0", "1"]
    assert {j.rule for j in jobs} == {"load_data", "preprocess", "augment", "train"}, (
        "localrules (make_demo, split, aggregate, plots) must not be SLURM jobs"
    )
    for j in train:
        assert f"fold {j.wildcards} done" in job_log(slurm, j)

    got = pd.read_feather(slurm / RUN / "kfold_results.feather")
    want = pd.read_feather(local / RUN / "kfold_results.feather")
    pd.testing.assert_frame_equal(got, want, check_exact=True)


def test_time_limit_signal_checkpoint_retry_resume(tmp_path: Path) -> None:
    """Attempt 1 has a 1-minute limit: SIGTERM before it, checkpoint, retry, resume, finish."""
    project = new_project(tmp_path, "timelimit", LARGER)
    prebuild(project, str(RUN / "fold_0/augment/manifest.parquet"))
    # ~60 s of training: more than attempt 1 can do whatever the machine's speed.
    epochs = max(30, math.ceil(60 / seconds_per_epoch(project)))
    new_cfg = yaml.safe_load((project / "tiny.yaml").read_text())
    new_cfg["train"].update(epochs=epochs, time_margin_s=0)
    (project / "tiny.yaml").write_text(yaml.safe_dump(new_cfg))
    # Attempt 1: `sbatch -t 1 --signal=TERM@10`. SLURM checks time limits every 30 s, so the
    # SIGTERM comes 20-50 s into the job, always before the script's own budget (60 s - 15 s
    # margin from its start) and the limit itself. The retry gets 10 minutes to finish, and
    # (like every retry in the shipped profile) 1.5x the memory.
    limits = overlay_profile(
        tmp_path / "limits",
        {"runtime": "1 if attempt == 1 else 10", "slurm_extra": "'--signal=TERM@10'"},
        retries=2,
    )
    target = str(RUN / "fold_0/metrics.json")
    out = SnakemakeRun(project, [*profile_args(limits), target, *TINY], "slurm").check(900)

    train = [j for j in squeue_jobs(run_ids(out)) if j.rule == "train"]
    assert [j.state for j in train] == ["FAILED", "COMPLETED"], train
    assert [j.mem for j in train] == ["2000M", "3000M"], "mem_mb must grow x1.5 per attempt"
    first, second = (job_log(project, j) for j in train)
    assert STARTED.search(first), "attempt 1 never started training"
    assert "fold 0: received SIGTERM; checkpoint written" in first, first[-3000:]
    resumed = resume_point(second)
    assert resumed, f"attempt 2 did not resume:\n{second[-3000:]}"
    stop = re.search(r"checkpoint written at epoch (\d+) batch (\d+)", first)
    assert resumed == stop.groups(), "resumed elsewhere than it stopped"
    assert_each_epoch_trained_once(project, train, epochs)
    assert json.loads((project / RUN / "fold_0/metrics.json").read_text())["fold"] == 0


def _wait_for(cond, timeout: float, what: str, run: SnakemakeRun) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        if run.proc.poll() is not None:
            pytest.fail(f"snakemake exited before {what}\n{run.output[-6000:]}")
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}\n{run.output[-6000:]}")


def test_scancel_then_rerun_resumes_and_dry_run_lists_rest(tmp_path: Path) -> None:
    """scancel a running train job; -n lists only that fold's work; a rerun resumes it."""
    project = new_project(tmp_path, "scancel", {**LARGER, "train": {"epochs": 15}})
    folds = [str(RUN / f"fold_{k}/augment/manifest.parquet") for k in (0, 1)]
    prebuild(project, *folds)
    first = SnakemakeRun(project, [*profile_args(), "--retries", "0", *TINY], "first")
    ckpt = project / RUN / "checkpoints/fold_0/latest_checkpoint.pt"

    def fold0_running() -> SlurmJob | None:
        jobs = squeue_jobs(run_ids(first.output))
        return next((j for j in jobs if j.comment == "rule_train_wildcards_0"), None)

    # Cancel fold 0's job once it is training and has written a checkpoint.
    _wait_for(lambda: ckpt.exists(), 400, "fold 0's first checkpoint", first)
    job = fold0_running()
    assert job is not None and job.state == "RUNNING", job
    subprocess.run(["scancel", str(job.jobid)], check=True, timeout=30)
    rc = first.wait(timeout=600)  # must not hang on the cancelled job (squeue status checks)
    assert rc != 0, "the cancelled fold cannot have succeeded"
    assert "CANCELLED" in first.output
    # scancel sends SIGTERM first: the script checkpoints on its way out.
    assert "fold 0: received SIGTERM; checkpoint written" in job_log(project, job)

    assert not (project / RUN / "fold_0/metrics.json").exists()
    assert (project / RUN / "fold_1/metrics.json").exists(), "fold 1 must finish (keep-going)"
    left = planned_jobs(project, *profile_args())
    assert left == {"train[fold=0]": 1, "aggregate": 1, "plots": 1, "provenance": 1}, left

    out = SnakemakeRun(project, [*profile_args(), *TINY], "rerun").check(timeout=600)
    train = [j for j in squeue_jobs(run_ids(out)) if j.rule == "train"]
    assert [j.wildcards for j in train] == ["0"], "only the cancelled fold runs again"
    assert resume_point(job_log(project, train[0])), job_log(project, train[0])[-3000:]
    assert_each_epoch_trained_once(project, [job, *train], 15)
    assert (project / RUN / "kfold_results.feather").exists()
