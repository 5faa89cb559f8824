"""The workflow on a real single-node SLURM cluster through ``--profile profiles/slurm``.

Each test copies the workflow into its own directory and drives real ``sbatch``/``srun`` via
snakemake-executor-plugin-slurm; job facts come from ``squeue`` (finished jobs stay listed for
MinJobAge = 600 s on the test cluster) and from the plugin's per-job logs
(``.snakemake/slurm_logs/rule_train/<fold>/<jobid>.log``, which keep each attempt's output:
Snakemake empties the rule's own log file before a retry). Nothing is mocked, and no test
asserts on wall time: the machine is shared; time limits only decide *when* SLURM interrupts.

Waits follow observed progress (a checkpoint on disk, a job's state in squeue), not assumed
speeds. Each test has its own pytest timeout covering everything it waits for
(``func_only``: the cluster set-up is bounded by its own timeout and is not charged to the first
test), and ``stop_leftover_runs`` stops Snakemake and scancels jobs whatever the outcome.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.slurm.conftest import (
    LARGER,
    RUN,
    STARTED,
    TINY,
    SnakemakeRun,
    assert_each_epoch_trained_once,
    assert_stops_and_resumes_match,
    fastest_epoch_s,
    job_log,
    new_project,
    prebuild,
    profile_args,
    running_train_job,
    squeue_jobs,
    wait_for,
)
from tests.workflow.helpers import planned_jobs

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]


@pytest.mark.timeout(1500, func_only=True)  # two runs of up to 600 s each, side by side
def test_profile_run_matches_local_run(tmp_path: Path) -> None:
    """Tiny config end to end via the profile: one SLURM job per fold, same results as local."""
    local = new_project(tmp_path, "local")
    slurm = new_project(tmp_path, "slurm")
    # The local reference runs alongside: the SLURM run mostly waits on status checks.
    local_run = SnakemakeRun(local, ["--cores", "1", *TINY], "local")
    out = SnakemakeRun(slurm, [*profile_args(), *TINY], "slurm").check(timeout=600)
    local_run.check(timeout=600)

    jobs = squeue_jobs(out)
    train = [j for j in jobs if j.rule == "train"]
    assert sorted(j.wildcards for j in train) == ["0", "1"], jobs
    assert len({j.jobid for j in train}) == 2, "each fold must be its own SLURM job"
    assert all(j.state == "COMPLETED" for j in jobs), jobs
    assert all(j.tres == "gres:gpu:1" for j in train), "train jobs must request one GPU"
    assert sorted(j.wildcards for j in jobs if j.rule == "augment") == ["0", "1"]
    assert {j.rule for j in jobs} == {"load_data", "preprocess", "augment", "train"}, (
        "localrules (make_demo, split, aggregate, plots, ...) must not be SLURM jobs"
    )
    for j in train:
        assert f"fold {j.wildcards} done" in job_log(slurm, j)

    got = pd.read_feather(slurm / RUN / "kfold_results.feather")
    want = pd.read_feather(local / RUN / "kfold_results.feather")
    pd.testing.assert_frame_equal(got, want, check_exact=True)


@pytest.mark.timeout(2400, func_only=True)  # calibration, attempt 1, up to 2 retries
def test_time_limit_signal_checkpoint_retry_resume(tmp_path: Path) -> None:
    """Attempt 1's time limit is cut to about a minute once it is training: SLURM's warning
    SIGTERM comes first, the script checkpoints and fails, the retry resumes and finishes."""
    project = new_project(tmp_path, "timelimit", LARGER)
    prebuild(project, str(RUN / "fold_0/augment/manifest.parquet"))
    # Enough epochs to outlast the up to 60 s between the cut and the signal 2x over, even at
    # this machine's best observed speed; the retry trains the rest.
    epochs = max(30, math.ceil(120 / fastest_epoch_s(project)))
    new_cfg = yaml.safe_load((project / "tiny.yaml").read_text())
    new_cfg["train"].update(epochs=epochs, time_margin_s=0)
    (project / "tiny.yaml").write_text(yaml.safe_dump(new_cfg))
    # `sbatch -t 10 --signal=TERM@150`: slurmctld sends the signal at its first periodic check
    # (measured here: up to 60 s apart) once the end is less than 150 s + 30 s away. Cutting
    # the limit to 2-3 minutes from now (below) therefore brings the SIGTERM within about a
    # minute, and the limit itself leaves the script another minute to checkpoint. A retry
    # that is itself too slow for its 10 minutes is signalled the same way and resumed by the
    # next one (retries: 2); every retry gets 1.5x the memory, as in the shipped profile.
    limits = profile_args(
        tmp_path / "limits", {"runtime": 10, "slurm_extra": "'--signal=TERM@150'"}, retries=2
    )
    target = str(RUN / "fold_0/metrics.json")
    run = SnakemakeRun(project, [*limits, target, *TINY], "slurm")
    ckpt = project / RUN / "checkpoints/fold_0/latest_checkpoint.pt"
    # Attempt 1 is training once it is RUNNING and has written its first checkpoint.
    job = wait_for(lambda: ckpt.exists() and running_train_job(run, 0), "attempt 1 trains", run)
    used = subprocess.run(
        ["squeue", "-h", "-j", str(job.jobid), "-o", "%M"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout.strip()  # fmt: skip
    elapsed_min = sum(int(x) * 60**i for i, x in enumerate(reversed(used.split(":")))) / 60
    limit_min = math.ceil(elapsed_min) + 2
    subprocess.run(
        ["scontrol", "update", f"JobId={job.jobid}", f"TimeLimit={limit_min}"],
        check=True, timeout=30,
    )  # fmt: skip
    out = run.check(timeout=2000)

    train = [j for j in squeue_jobs(out) if j.rule == "train"]
    assert train[0].jobid == job.jobid
    states = [j.state for j in train]
    assert len(train) >= 2 and states[-1] == "COMPLETED", train
    assert all(s in ("FAILED", "TIMEOUT") for s in states[:-1]), train
    assert [j.mem for j in train] == [f"{int(2000 * 1.5**i)}M" for i in range(len(train))], (
        "mem_mb must grow x1.5 per attempt"
    )
    first = job_log(project, train[0])
    assert STARTED.search(first), "attempt 1 never started training"
    assert "fold 0: received SIGTERM; checkpoint written" in first, first[-3000:]
    assert_stops_and_resumes_match(project, train)
    assert_each_epoch_trained_once(project, train, epochs)
    assert json.loads((project / RUN / "fold_0/metrics.json").read_text())["fold"] == 0


@pytest.mark.timeout(2400, func_only=True)  # prebuild, two runs of both folds, a dry run
def test_scancel_then_rerun_resumes_and_dry_run_lists_rest(tmp_path: Path) -> None:
    """scancel a running train job; -n lists only that fold's work; a rerun resumes it."""
    project = new_project(tmp_path, "scancel", LARGER)
    folds = [str(RUN / f"fold_{k}/augment/manifest.parquet") for k in (0, 1)]
    prebuild(project, *folds)
    # Training must outlast the moment of the scancel (~1 s after the first checkpoint, which
    # comes after the first batch) even at this machine's best observed speed: 10x margin.
    epochs = max(8, math.ceil(10 / fastest_epoch_s(project)))
    new_cfg = yaml.safe_load((project / "tiny.yaml").read_text())
    new_cfg["train"]["epochs"] = epochs
    (project / "tiny.yaml").write_text(yaml.safe_dump(new_cfg))
    first = SnakemakeRun(project, [*profile_args(), "--retries", "0", *TINY], "first")
    ckpt = project / RUN / "checkpoints/fold_0/latest_checkpoint.pt"

    # Cancel fold 0's job once it is RUNNING and training (its first checkpoint is on disk),
    # however long the queue or the start-up took.
    job = wait_for(lambda: ckpt.exists() and running_train_job(first, 0), "fold 0 trains", first)
    subprocess.run(["scancel", str(job.jobid)], check=True, timeout=30)
    rc = first.wait(timeout=900)  # must not hang on the cancelled job (squeue status checks)
    assert rc != 0, "the cancelled fold cannot have succeeded"
    assert "CANCELLED" in first.output
    # scancel sends SIGTERM first: the script checkpoints on its way out.
    assert "fold 0: received SIGTERM; checkpoint written" in job_log(project, job)

    assert not (project / RUN / "fold_0/metrics.json").exists()
    assert (project / RUN / "fold_1/metrics.json").exists(), "fold 1 must finish (keep-going)"
    left = planned_jobs(project, *profile_args())
    results_jobs = ("aggregate", "plots", "memory_plot", "benchmarks", "provenance")
    assert left == {"train[fold=0]": 1, **dict.fromkeys(results_jobs, 1)}, left

    out = SnakemakeRun(project, [*profile_args(), *TINY], "rerun").check(timeout=900)
    train = [j for j in squeue_jobs(out) if j.rule == "train"]
    assert [j.wildcards for j in train] == ["0"], "only the cancelled fold runs again"
    assert_stops_and_resumes_match(project, [job, *train])
    assert_each_epoch_trained_once(project, [job, *train], epochs)
    assert (project / RUN / "kfold_results.feather").exists()
