"""GPU slots for local train jobs (real concurrent processes, faked GPU count) and device choice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fvc import devices

REPO = Path(__file__).resolve().parents[2]

# A "train job": claims a slot, records what it got and when, holds it, exits.
JOB = """
import json, os, sys, time
from fvc.devices import claim_gpu_slot
out, hold = sys.argv[1], float(sys.argv[2])
slot = claim_gpu_slot(poll_s=0.02)
start = time.time()
time.sleep(hold)
rec = {"pid": os.getpid(), "slot": None if slot is None else slot.index, "start": start,
       "end": time.time(), "cvd": os.environ.get("CUDA_VISIBLE_DEVICES")}
with open(out, "a") as fh:
    fh.write(json.dumps(rec) + "\\n")
"""


# A "train job" that reports its claim at once and holds it until the test releases it
# (``release-<pid>`` or ``release-all`` appears), so tests see which jobs hold slots together.
HOLDER = """
import json, os, sys, time
from pathlib import Path
from fvc.devices import claim_gpu_slot
d = Path(sys.argv[1])
slot = claim_gpu_slot(poll_s=0.02)
rec = {"pid": os.getpid(), "slot": None if slot is None else slot.device,
       "cvd": os.environ.get("CUDA_VISIBLE_DEVICES")}
with open(d / "claims.jsonl", "a") as fh:
    fh.write(json.dumps(rec) + "\\n")
deadline = time.time() + 120
while not ((d / f"release-{os.getpid()}").exists() or (d / "release-all").exists()):
    if time.time() > deadline:
        sys.exit(3)
    time.sleep(0.02)
"""


def job_env(tmp_path: Path, n_gpus: int | None, **extra: str) -> dict[str, str]:
    """The test's environment without any GPU or SLURM variables, plus ``extra``;
    ``n_gpus`` fakes the machine's GPU count (None: no ``FVC_GPU_COUNT``)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k != "CUDA_VISIBLE_DEVICES" and not k.startswith(("SLURM_", "FVC_GPU_"))
    }
    src = str(REPO / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    env["FVC_GPU_SLOT_DIR"] = str(tmp_path / "slots")
    if n_gpus is not None:
        env["FVC_GPU_COUNT"] = str(n_gpus)
    return {**env, **extra}


def start_job(tmp_path: Path, env: dict, hold: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", JOB, str(tmp_path / "jobs.jsonl"), str(hold)], env=env
    )


def records(tmp_path: Path) -> list[dict]:
    return [json.loads(x) for x in (tmp_path / "jobs.jsonl").read_text().splitlines()]


def test_concurrent_jobs_never_share_a_slot_and_never_exceed_n(tmp_path) -> None:
    n, jobs = 2, 7
    env = job_env(tmp_path, n)
    procs = [start_job(tmp_path, env, hold=0.4) for _ in range(jobs)]
    assert [p.wait(timeout=120) for p in procs] == [0] * jobs
    recs = records(tmp_path)
    assert len(recs) == jobs
    assert all(r["slot"] in range(n) and r["cvd"] == str(r["slot"]) for r in recs)
    for i, a in enumerate(recs):  # two jobs holding one slot at the same time: never
        for b in recs[i + 1 :]:
            if a["slot"] == b["slot"]:
                assert a["end"] <= b["start"] or b["end"] <= a["start"], (a, b)
    moments = sorted({r["start"] for r in recs})
    busiest = max(sum(r["start"] <= t < r["end"] for r in recs) for t in moments)
    assert busiest == n  # all slots were used, never more


def test_a_killed_job_releases_its_slot(tmp_path) -> None:
    env = job_env(tmp_path, 1)
    holder = start_job(tmp_path, env, hold=60)
    lock = tmp_path / "slots" / "gpu0.lock"
    deadline = time.time() + 60
    while not (lock.exists() and lock.read_text().strip() == str(holder.pid)):
        assert time.time() < deadline and holder.poll() is None
        time.sleep(0.02)
    waiter = start_job(tmp_path, env, hold=0)
    time.sleep(1.0)
    assert waiter.poll() is None  # waits: the only slot is taken
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert waiter.wait(timeout=60) == 0
    assert [r["slot"] for r in records(tmp_path)] == [0]  # the waiter got it


@pytest.mark.parametrize(
    "extra",
    [
        {"SLURM_JOB_ID": "42"},  # a SLURM job without GPUs
        # a SLURM job given one GPU, as SLURM sets it with device cgroups
        {
            "SLURM_JOB_ID": "42",
            "SLURM_JOB_GPUS": "3",
            "SLURM_GPUS_ON_NODE": "1",
            "CUDA_VISIBLE_DEVICES": "0",
        },
        {"CUDA_VISIBLE_DEVICES": "3"},  # one GPU chosen by the user
        {"CUDA_VISIBLE_DEVICES": ""},  # no GPU, as CUDA reads it
        {"CUDA_VISIBLE_DEVICES": "NoDevFiles"},
        {"FVC_GPU_COUNT": "0"},
        {"CUDA_VISIBLE_DEVICES": "0,1", "FVC_GPU_COUNT": "0"},
    ],
)
def test_allocator_stays_out_of_the_way(tmp_path, extra: dict) -> None:
    env = job_env(tmp_path, 2, **extra)
    assert start_job(tmp_path, env, hold=0).wait(timeout=60) == 0
    (rec,) = records(tmp_path)
    assert rec["slot"] is None and rec["cvd"] == extra.get("CUDA_VISIBLE_DEVICES")
    assert not (tmp_path / "slots").exists() or not list((tmp_path / "slots").iterdir())


def start_holder(tmp_path: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], env=env)


def claims(tmp_path: Path) -> dict[int, dict]:
    f = tmp_path / "claims.jsonl"
    lines = f.read_text().splitlines() if f.exists() else []
    return {r["pid"]: r for r in map(json.loads, lines)}


def wait_claims(tmp_path: Path, procs: list[subprocess.Popen]) -> list[dict]:
    """The claims of ``procs``, in their order, once every one of them has claimed."""
    deadline = time.time() + 60
    while not all(p.pid in claims(tmp_path) for p in procs):
        assert time.time() < deadline, "a job never claimed"
        assert all(p.poll() is None for p in procs), "a job ended before it claimed"
        time.sleep(0.02)
    got = claims(tmp_path)
    return [got[p.pid] for p in procs]


def release(tmp_path: Path, proc: subprocess.Popen | None = None) -> None:
    (tmp_path / ("release-all" if proc is None else f"release-{proc.pid}")).touch()


@pytest.fixture
def holders(tmp_path):
    """Holder processes started by a test; released and reaped however the test ends."""
    procs: list[subprocess.Popen] = []
    yield procs
    release(tmp_path)
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


UUIDS = ",".join(
    [
        "GPU-8d2f5e9c-0b1a-4c3e-9f7d-2a6b1c0e4d3f",
        "MIG-5b1e7a2c-9d4f-5e6a-8b7c-1d2e3f4a5b6c",
        "MIG-GPU-8d2f5e9c-0b1a-4c3e-9f7d-2a6b1c0e4d3f/1/0",  # pre-R470 MIG names hold slashes
    ]
)


@pytest.mark.parametrize("visible", ["3,5,7", UUIDS])
def test_jobs_share_out_the_listed_gpus(tmp_path, holders, visible: str) -> None:
    """``CUDA_VISIBLE_DEVICES=3,5,7`` exported: three jobs at once get 3, 5 and 7, each alone."""
    env = job_env(tmp_path, None, CUDA_VISIBLE_DEVICES=visible)
    holders += [start_holder(tmp_path, env) for _ in range(3)]
    got = wait_claims(tmp_path, holders)
    assert sorted(r["cvd"] for r in got) == sorted(visible.split(","))
    assert all(r["slot"] == r["cvd"] for r in got)
    locks = sorted(p.name for p in (tmp_path / "slots").iterdir())
    assert locks == sorted(devices.lock_name(e) for e in visible.split(","))
    release(tmp_path)
    assert [p.wait(timeout=60) for p in holders] == [0, 0, 0]


# A batch script or srun step of a 2-GPU allocation, as SLURM sets it up with device cgroups:
# node-wide indices in SLURM_*_GPUS, the job's own numbering in CUDA_VISIBLE_DEVICES.
SLURM_2_GPUS = {
    "SLURM_JOB_ID": "4242",
    "SLURM_STEP_ID": "0",
    "SLURM_JOB_GPUS": "2,3",
    "SLURM_STEP_GPUS": "2,3",
    "SLURM_GPUS_ON_NODE": "2",
    "CUDA_VISIBLE_DEVICES": "0,1",
}


def test_a_two_gpu_slurm_allocation_runs_two_jobs_and_queues_the_third(tmp_path, holders) -> None:
    env = job_env(tmp_path, None, **SLURM_2_GPUS)
    holders += [start_holder(tmp_path, env) for _ in range(2)]
    first, second = holders
    a, b = wait_claims(tmp_path, [first, second])
    assert {a["cvd"], b["cvd"]} == {"0", "1"}
    assert sorted(p.name for p in (tmp_path / "slots" / "slurm-4242.0").iterdir()) == [
        "gpu0.lock",
        "gpu1.lock",
    ]
    third = start_holder(tmp_path, env)
    holders.append(third)
    time.sleep(1.0)
    assert third.poll() is None and third.pid not in claims(tmp_path)  # waits for a GPU
    release(tmp_path, first)
    assert first.wait(timeout=60) == 0
    (c,) = wait_claims(tmp_path, [third])
    assert c["cvd"] == a["cvd"]  # the GPU the first job gave back
    assert second.poll() is None  # and the second job still holds its own


def test_two_allocations_on_one_node_do_not_wait_for_each_other(tmp_path, holders) -> None:
    """With device cgroups both allocations call their GPUs 0 and 1; their locks are apart."""
    env = job_env(tmp_path, None, **SLURM_2_GPUS)
    holders += [start_holder(tmp_path, env) for _ in range(2)]
    wait_claims(tmp_path, holders)
    other = start_holder(tmp_path, {**env, "SLURM_JOB_ID": "4343"})
    holders.append(other)
    (c,) = wait_claims(tmp_path, [other])  # at once, although 4242 holds "0" and "1"
    assert c["cvd"] == "0"
    assert (tmp_path / "slots" / "slurm-4343.0" / "gpu0.lock").exists()


def test_a_capped_list_still_gives_the_job_one_gpu(tmp_path) -> None:
    """``FVC_GPU_COUNT=1`` with three GPUs listed: the job must see one GPU, not three."""
    env = job_env(tmp_path, 1, CUDA_VISIBLE_DEVICES="3,5,7")
    assert start_job(tmp_path, env, hold=0).wait(timeout=60) == 0
    (rec,) = records(tmp_path)
    assert rec["slot"] == 0 and rec["cvd"] == "3"


def test_visible_list_rules(tmp_path) -> None:
    parse, visible = devices.parse_visible_devices, devices.visible_gpus
    assert parse("0, 2,-1,1") == ["0", "2"]  # CUDA stops at the first invalid entry
    assert parse("1,1,2") == ["1", "2"]
    assert parse("") == [] and parse("NoDevFiles") == []
    assert parse(UUIDS) == UUIDS.split(",")
    assert visible({"CUDA_VISIBLE_DEVICES": "3,5,7", "FVC_GPU_COUNT": "2"}) == ["3", "5"]
    assert visible({"FVC_GPU_COUNT": "3"}) == ["0", "1", "2"]
    assert visible({"SLURM_JOB_ID": "9", "FVC_GPU_COUNT": "4"}) == []  # SLURM gave none here
    assert visible({"SLURM_JOB_ID": "9", "CUDA_VISIBLE_DEVICES": "0,1"}) == ["0", "1"]
    base = {"FVC_GPU_SLOT_DIR": str(tmp_path)}
    assert devices.slot_dir(base) == tmp_path
    assert devices.slot_dir({**base, "SLURM_JOB_ID": "9"}) == tmp_path / "slurm-9"
    assert devices.lock_name("MIG-GPU-ab/1/0") == "gpuMIG-GPU-ab_1_0.lock"


def test_a_bare_salloc_shell_is_left_alone_with_a_hint(tmp_path, monkeypatch, caplog) -> None:
    """SLURM sets no CUDA_VISIBLE_DEVICES for salloc's shell on the submit host: the GPUs there
    are not the allocation's, so nothing is claimed, and the log says how to reach them."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_JOB_GPUS", "0,1")
    monkeypatch.setenv("FVC_GPU_COUNT", "2")
    monkeypatch.setenv("FVC_GPU_SLOT_DIR", str(tmp_path / "slots"))
    with caplog.at_level("WARNING", logger="fvc.devices"):
        assert devices.claim_gpu_slot() is None
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    assert not (tmp_path / "slots").exists()
    assert "SLURM job 77 has GPUs (SLURM_JOB_GPUS=0,1)" in caplog.text and "srun" in caplog.text


def test_auto_device_is_the_cpu_without_cuda(caplog) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks the CPU fallback of train.device auto")
    with caplog.at_level("INFO", logger="fvc.devices"):
        assert devices.pick_device("auto").type == "cpu"
    assert "train.device auto: cpu (no CUDA device visible" in caplog.text
    assert devices.pick_device("cpu").type == "cpu"
