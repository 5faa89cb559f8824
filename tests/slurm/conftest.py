"""The local SLURM test cluster as a session fixture, and helpers to drive Snakemake through it.

The cluster is real (Debian's slurmctld/slurmd/munge started by ``tests/slurm/cluster.sh``):
nothing here is mocked. Without root or apt the tests are skipped with the script's reason;
``FVC_REQUIRE_SLURM=1`` turns that into a failure (for CI, which is root on Debian 12).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, TypeVar

import pandas as pd
import pytest
import yaml

from tests.workflow.helpers import SNAKEMAKE, make_project

REPO = Path(__file__).resolve().parents[2]
CLUSTER_SH = REPO / "tests" / "slurm" / "cluster.sh"
PROFILE = REPO / "profiles" / "slurm"
OVERLAY = REPO / "tests" / "slurm" / "profile"


#: Under `pytest -n`: the worker that started the cluster leaves this file in the run's shared
#: temporary directory and the controller stops the cluster at the very end.
STARTED_MARK = "slurm_cluster_started"


def stop_cluster_started_by_workers(basetemp: Path) -> None:
    if (basetemp / STARTED_MARK).exists():
        subprocess.run(["bash", str(CLUSTER_SH), "stop"], capture_output=True, timeout=120)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Start the single-node cluster (idempotent); stop it afterwards only if we started it
    (under `pytest -n`, once every worker is done: tests/conftest.py)."""
    if shutil.which("bash") is None:
        pytest.skip("bash not found")
    was_up = (
        subprocess.run(
            ["bash", str(CLUSTER_SH), "status"], capture_output=True, text=True
        ).returncode
        == 0
    )
    t0 = time.monotonic()
    proc = subprocess.run(
        ["bash", str(CLUSTER_SH), "setup"], capture_output=True, text=True, timeout=600
    )
    if proc.returncode != 0:
        reason = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        msg = f"local SLURM cluster cannot start ({CLUSTER_SH.name} setup): {reason}"
        if os.environ.get("FVC_REQUIRE_SLURM") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    print(f"SLURM test cluster ready in {time.monotonic() - t0:.1f} s")
    xdist = "PYTEST_XDIST_WORKER" in os.environ
    if xdist and not was_up:
        (tmp_path_factory.getbasetemp().parent / STARTED_MARK).touch()
    yield
    if not xdist and not was_up:
        subprocess.run(["bash", str(CLUSTER_SH), "stop"], capture_output=True, timeout=120)


@dataclass(frozen=True)
class Submission:
    """One `sbatch` call of the plugin, from the line it logs for it."""

    slurm_id: int  # the job id (of an array: the array's job id, %A)
    snakemake_ids: tuple[int, ...]  # Snakemake job ids; of an array in task order
    first_task: int | None  # index of the first array task (%a); None for an ordinary job

    @property
    def is_array(self) -> bool:
        return self.first_task is not None


SUBMITTED_JOB = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+)")
SUBMITTED_ARRAY = re.compile(
    r"Submitted array job with Snakemake IDs ([\d,]+) and SLURM job ID (\d+)\. "
    r"The individual task IDs are (\d+)-(\d+)\."
)


def submissions(text: str) -> list[Submission]:
    """Every sbatch call a Snakemake run's output reports, in order (one line per call)."""
    found: list[tuple[int, Submission]] = []
    for m in SUBMITTED_JOB.finditer(text):
        found.append((m.start(), Submission(int(m.group(2)), (int(m.group(1)),), None)))
    for m in SUBMITTED_ARRAY.finditer(text):
        ids = tuple(int(i) for i in m.group(1).split(","))
        assert int(m.group(4)) - int(m.group(3)) + 1 == len(ids), m.group(0)
        found.append((m.start(), Submission(int(m.group(2)), ids, int(m.group(3)))))
    return [sub for _, sub in sorted(found, key=lambda f: f[0])]


_RULE_LINE = re.compile(r"^(?:local)?rule (\w+):$")
_JOBID_LINE = re.compile(r"^\s+jobid: (\d+)$")
_WILDCARDS_LINE = re.compile(r"^\s+wildcards: (.*)$")


def snakemake_jobs(text: str) -> dict[int, tuple[str, str]]:
    """Snakemake job id -> (rule, wildcard values joined by "_", as the plugin names them) from
    the job blocks a run prints: `rule <name>:` and its indented lines (a retry prints its block
    again with the same id; an `Error in rule` block, also indented, is not a job block)."""
    jobs: dict[int, tuple[str, str]] = {}
    rule, jobid = None, None
    for line in text.splitlines():
        if m := _RULE_LINE.match(line):
            rule, jobid = m.group(1), None
        elif not line[:1].isspace():  # any other unindented line ends the block
            rule, jobid = None, None
        elif rule and (m := _JOBID_LINE.match(line)):
            jobid = int(m.group(1))
            jobs[jobid] = (rule, "")
        elif rule and jobid is not None and (m := _WILDCARDS_LINE.match(line)):
            values = [kv.split("=", 1)[1] for kv in m.group(1).split(", ")]
            jobs[jobid] = (rule, "_".join(values))
    return jobs


@dataclass
class SlurmJob:
    """One SLURM job (or array task) as squeue reports it (jobs stay listed for MinJobAge=600 s),
    with the rule and wildcards of the Snakemake job it runs.

    Those come from the Snakemake output, not from the job's comment: the plugin gives every task
    of an array the first task's comment (`rule_<rule>_wildcards_<values>`).
    """

    jobid: int  # an array task's own id once it started (a pending task shows the array's)
    array_job: int | None  # %A of an array task, else None
    array_task: int | None  # %a of an array task, else None
    comment: str
    state: str
    mem: str  # requested memory, e.g. 2000M
    tres: str  # TRES per job, e.g. gres:gpu:1 for `gpu: 1`
    rule: str
    wildcards: str | None  # None: an array task whose submission line is not printed yet

    @property
    def slurm_name(self) -> str:
        """The id to give scontrol/scancel: <jobid>, or <array job>_<task> for an array task."""
        return str(self.jobid) if self.array_job is None else f"{self.array_job}_{self.array_task}"

    def log_path(self, project: Path) -> Path:
        """The plugin's SLURM log of this job (one attempt; a requeued job appends to it)."""
        logs = project / ".snakemake" / "slurm_logs" / f"rule_{self.rule}"
        if self.array_job is not None:
            return logs / f"{self.array_job}_{self.array_task}.log"
        return logs / (self.wildcards or "") / f"{self.jobid}.log"


SQUEUE_FIELDS = "JobID:|,ArrayJobID:|,ArrayTaskID:|,Comment:|,State:|,MinMemory:|,tres-per-job:|"


def squeue_jobs(output: str) -> list[SlurmJob]:
    """All jobs (any state, one entry per array task) of the Snakemake run that printed
    ``output``: those submitted under its plugin run IDs (their job name)."""
    by_slurm_id = {s.slurm_id: s for s in submissions(output)}
    names = snakemake_jobs(output)
    jobs: list[SlurmJob] = []
    fields = SQUEUE_FIELDS
    for run_id in run_ids(output):
        out = subprocess.run(
            ["squeue", "--states=all", "--array", "--noheader", "--name", run_id, "-O", fields],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
        for line in out.splitlines():
            jobid, array_job, array_task, comment, state, mem, tres = line.split("|")[:7]
            rule = comment.removeprefix("rule_").split("_wildcards_")[0]
            if array_task.isdigit():
                a_job, a_task = int(array_job), int(array_task)
                sub = by_slurm_id.get(a_job)
                wildcards = None
                if sub is not None:
                    rule, wildcards = names[sub.snakemake_ids[a_task - sub.first_task]]
            else:
                a_job = a_task = None
                wildcards = comment.split("_wildcards_", 1)[1] if "_wildcards_" in comment else ""
            jobs.append(
                SlurmJob(int(jobid), a_job, a_task, comment, state, mem, tres, rule, wildcards)
            )
    return sorted(jobs, key=lambda j: j.jobid)


def run_ids(text: str) -> list[str]:
    """The plugin's run IDs (SLURM job names) printed by a Snakemake run."""
    return re.findall(r"SLURM run ID: (\S+)", text)


class SnakemakeRun:
    """One Snakemake process in ``project``; output goes to a file so tests can poll it.

    It runs in its own session (process group). Whatever happens to the test (a failed assert,
    pytest-timeout), the autouse fixture :func:`stop_leftover_runs` stops every run that is
    still alive and scancels its jobs.
    """

    live: ClassVar[list[SnakemakeRun]] = []

    def __init__(self, project: Path, args: Sequence[str], name: str):
        self.project = project
        self.out_path = project / f"{name}.out"
        self.cmd = [SNAKEMAKE, *args]
        self._out = self.out_path.open("w")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            self.cmd,
            cwd=project,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            start_new_session=True,
        )
        SnakemakeRun.live.append(self)

    @property
    def output(self) -> str:
        return self.out_path.read_text()

    def stop(self) -> None:
        """SIGINT (Snakemake scancels its jobs), then SIGKILL the group; scancel what is left."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=60)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # stray children of the group, if any
        self.proc.wait()
        self._out.close()
        for run_id in run_ids(self.output):
            subprocess.run(["scancel", "--name", run_id], capture_output=True, timeout=30)

    def wait(self, timeout: float) -> int:
        """Exit status; on timeout stop the run (its jobs are scancelled) and fail."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            pytest.fail(
                f"{' '.join(self.cmd)} did not finish within {timeout:.0f} s (hung?)\n"
                f"{self.output[-6000:]}"
            )
        finally:
            self._out.close()

    def check(self, timeout: float) -> str:
        """Wait for success; fail the test with the output tail otherwise."""
        rc = self.wait(timeout)
        if rc != 0:
            pytest.fail(f"{' '.join(self.cmd)} exited {rc}\n{self.output[-8000:]}")
        return self.output


def processes_inside(folder: Path) -> list[int]:
    """Processes whose working directory is ``folder`` or below it (other than this one)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if Path(os.readlink(proc / "cwd")).is_relative_to(folder):
                pids.append(int(proc.name))
    return pids


@pytest.fixture(autouse=True)
def stop_leftover_runs(tmp_path: Path) -> Iterator[None]:
    """After each test (passed, failed or timed out): no Snakemake run or SLURM job is left, and
    no process of the test's jobs either.

    The last part is for this container cluster: proctrack/linuxproc finds a job's processes by
    ancestry, so a process whose parent died first escapes SLURM's SIGKILL. Seen after
    `scontrol requeue`: the batch shell died on SIGTERM, and the job's outer Snakemake, its
    SIGTERM handler blocked on the scheduler lock it already held (Snakemake 9.27.1), stayed
    behind as an orphan. On clusters with proctrack/cgroup the whole job is killed.
    """
    yield
    while SnakemakeRun.live:
        SnakemakeRun.live.pop().stop()
    for pid in processes_inside(tmp_path):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# ---- shared by the test files -------------------------------------------------------------

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


T = TypeVar("T")
STARTED = re.compile(r"fold \d+: (no checkpoint; fresh start|resuming from)")


def prebuild(project: Path, *targets: str) -> None:
    """Build the data stages locally, so the SLURM part of a test is only what it is about."""
    SnakemakeRun(project, ["--cores", "2", *targets, *TINY], "prebuild").check(timeout=300)


def job_log(project: Path, job: SlurmJob) -> str:
    """The plugin's log of one SLURM job (one attempt; both runs of a requeued one): the
    script's stderr is in it."""
    return job.log_path(project).read_text()


def assert_each_epoch_trained_once(project: Path, jobs: list[SlurmJob], epochs: int) -> None:
    """Over all attempts every epoch finished exactly once, and history.csv lists them all."""
    trained = [int(m.group(1)) for j in jobs for m in EPOCH_LINE.finditer(job_log(project, j))]
    assert sorted(trained) == list(range(1, epochs + 1)), f"epochs trained: {trained}"
    fold = jobs[0].wildcards
    hist = pd.read_csv(project / RUN / f"fold_{fold}/history.csv")
    assert list(hist["epoch"]) == list(range(1, epochs + 1))


def fastest_epoch_s(project: Path, fold: int = 0) -> float:
    """This machine's best time for one epoch of the prebuilt fold now (outside SLURM, one
    thread like the train rule): the fastest of epochs 2-4, so sizes derived from it hold
    even if the machine gets quicker (less loaded) later."""
    cfg = yaml.safe_load((project / "tiny.yaml").read_text())
    scratch = project / "calibration"
    scratch.mkdir()
    (scratch / "cfg.yaml").write_text(yaml.safe_dump({"train": {**cfg["train"], "epochs": 4}}))
    data, aug = project / RUN / "data", project / RUN / f"fold_{fold}/augment"
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "fvc.cli", "train", "--config", str(scratch / "cfg.yaml")),
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
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    secs = [float(s) for s in re.findall(r" epoch \d+/4: .*, ([\d.]+) s$", proc.stderr, re.M)]
    assert len(secs) == 4, proc.stderr[-3000:]
    return max(0.02, min(secs[1:]))  # epoch 1 includes warm-up


def wait_for(cond: Callable[[], T | None], what: str, run: SnakemakeRun) -> T:
    """Poll ``cond`` until it returns a value; fail if Snakemake exits first. No deadline of its
    own: the test's pytest timeout bounds the wait (and the clean-up fixture stops the run)."""
    while True:
        value = cond()
        if value:
            return value
        if run.proc.poll() is not None:
            value = cond()  # it may have become true just before the exit
            if value:
                return value
            pytest.fail(f"snakemake exited before {what}\n{run.output[-6000:]}")
        time.sleep(0.5)


def running_train_job(run: SnakemakeRun, fold: int) -> SlurmJob | None:
    """Fold ``fold``'s train job (or array task) once SLURM says it is RUNNING."""
    jobs = squeue_jobs(run.output)
    return next(
        (j for j in jobs if (j.rule, j.wildcards, j.state) == ("train", str(fold), "RUNNING")),
        None,
    )


def assert_stops_and_resumes_match(project: Path, jobs: list[SlurmJob]) -> None:
    """Each attempt but the last stopped on SIGTERM with a checkpoint, and the next attempt
    resumed exactly where it stopped."""
    logs = [job_log(project, j) for j in jobs]
    for prev, nxt in itertools.pairwise(logs):
        stop = re.search(r"received SIGTERM; checkpoint written at epoch (\d+) batch (\d+)", prev)
        assert stop, f"an attempt ended without a SIGTERM checkpoint:\n{prev[-3000:]}"
        resumed = resume_point(nxt)
        assert resumed, f"the next attempt did not resume:\n{nxt[-3000:]}"
        assert resumed == stop.groups(), "resumed elsewhere than it stopped"


def profile_args(
    overlay: Path | None = None, train: dict | None = None, **top: object
) -> list[str]:
    """``--profile`` arguments: the shipped profile, the test-cluster overlay, then, given a folder
    ``overlay``, a per-test profile written there: the test overlay's set-resources with
    ``train`` entries replaced, plus the top-level keys ``top``.

    Later profiles replace whole top-level keys, so set-resources is copied in full.
    """
    args = ["--profile", str(PROFILE), "--profile", str(OVERLAY)]
    if overlay is None:
        return args
    base = yaml.safe_load((OVERLAY / "config.yaml").read_text())
    set_resources = base["set-resources"]
    set_resources["train"] = {**set_resources["train"], **(train or {})}
    overlay.mkdir(parents=True, exist_ok=True)
    (overlay / "config.yaml").write_text(yaml.safe_dump({"set-resources": set_resources, **top}))
    return [*args, "--profile", str(overlay)]


def new_project(tmp_path: Path, name: str, overlay: dict | None = None) -> Path:
    """A copy of the workflow with the tiny config (+ ``overlay`` merged into tiny.yaml)."""
    proj = make_project(tmp_path / name)
    if overlay:
        cfg = yaml.safe_load((proj / "tiny.yaml").read_text())
        for section, values in overlay.items():
            cfg[section] = {**cfg.get(section, {}), **values}
        (proj / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    return proj
