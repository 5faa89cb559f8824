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


def job_env(tmp_path: Path, n_gpus: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID")}
    src = str(REPO / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    return {**env, "FVC_GPU_COUNT": str(n_gpus), "FVC_GPU_SLOT_DIR": str(tmp_path / "slots"),
            **extra}  # fmt: skip


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
    "extra", [{"SLURM_JOB_ID": "42"}, {"CUDA_VISIBLE_DEVICES": "3"}, {"FVC_GPU_COUNT": "0"}]
)
def test_allocator_stays_out_of_the_way(tmp_path, extra: dict) -> None:
    env = job_env(tmp_path, 2, **extra)
    assert start_job(tmp_path, env, hold=0).wait(timeout=60) == 0
    (rec,) = records(tmp_path)
    assert rec["slot"] is None and rec["cvd"] == extra.get("CUDA_VISIBLE_DEVICES")
    assert not (tmp_path / "slots").exists() or not list((tmp_path / "slots").iterdir())


def test_auto_device_is_the_cpu_without_cuda(caplog) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks the CPU fallback of train.device auto")
    with caplog.at_level("INFO", logger="fvc.devices"):
        assert devices.pick_device("auto").type == "cpu"
    assert "train.device auto: cpu (no CUDA device visible" in caplog.text
    assert devices.pick_device("cpu").type == "cpu"
