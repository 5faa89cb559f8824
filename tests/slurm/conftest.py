"""The local SLURM test cluster as a session fixture, and helpers to drive Snakemake through it.

The cluster is real (Debian's slurmctld/slurmd/munge started by ``tests/slurm/cluster.sh``):
nothing here is mocked. Without root or apt the tests are skipped with the script's reason;
``FVC_REQUIRE_SLURM=1`` turns that into a failure (for CI, which is root on Debian 12).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

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


@dataclass
class SlurmJob:
    """One SLURM job as squeue reports it (jobs stay listed for MinJobAge=600 s)."""

    jobid: int
    comment: str  # the plugin's `rule_<rule>_wildcards_<values>`
    state: str
    mem: str  # requested memory, e.g. 2000M
    tres: str  # TRES per job, e.g. gres:gpu:1 for `gpu: 1`

    @property
    def rule(self) -> str:
        return self.comment.removeprefix("rule_").split("_wildcards_")[0]

    @property
    def wildcards(self) -> str:
        return self.comment.split("_wildcards_", 1)[1] if "_wildcards_" in self.comment else ""


SQUEUE_FIELDS = "JobID:|,Comment:|,State:|,MinMemory:|,tres-per-job:|"


def squeue_jobs(run_ids: Sequence[str]) -> list[SlurmJob]:
    """All jobs (any state) submitted under the given plugin run IDs (their job name)."""
    jobs: list[SlurmJob] = []
    for run_id in run_ids:
        out = subprocess.run(
            ["squeue", "--states=all", "--noheader", "--name", run_id, "-O", SQUEUE_FIELDS],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
        for line in out.splitlines():
            jobid, comment, state, mem, tres = line.split("|")[:5]
            jobs.append(SlurmJob(int(jobid), comment, state, mem, tres))
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


@pytest.fixture(autouse=True)
def stop_leftover_runs() -> Iterator[None]:
    """After each test (passed, failed or timed out): no Snakemake run or SLURM job is left."""
    yield
    while SnakemakeRun.live:
        SnakemakeRun.live.pop().stop()


def profile_args(*extra_profiles: Path) -> list[str]:
    """The shipped profile, the test-cluster overlay, then any per-test overlays."""
    args = ["--profile", str(PROFILE), "--profile", str(OVERLAY)]
    for p in extra_profiles:
        args += ["--profile", str(p)]
    return args


def overlay_profile(dest: Path, train: dict, **top: object) -> Path:
    """A per-test profile: the test overlay's set-resources with ``train`` entries replaced.

    Later profiles replace whole top-level keys, so set-resources is copied in full.
    """
    base = yaml.safe_load((OVERLAY / "config.yaml").read_text())
    set_resources = base["set-resources"]
    set_resources["train"] = {**set_resources["train"], **train}
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.yaml").write_text(yaml.safe_dump({"set-resources": set_resources, **top}))
    return dest


def new_project(tmp_path: Path, name: str, overlay: dict | None = None) -> Path:
    """A copy of the workflow with the tiny config (+ ``overlay`` merged into tiny.yaml)."""
    proj = make_project(tmp_path / name)
    if overlay:
        cfg = yaml.safe_load((proj / "tiny.yaml").read_text())
        for section, values in overlay.items():
            cfg[section] = {**cfg.get(section, {}), **values}
        (proj / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    return proj
