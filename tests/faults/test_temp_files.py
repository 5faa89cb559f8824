"""Temporary files of killed writers: a real SIGKILL in the middle of an atomic write.

Two real writer processes enter ``fvc.io.atomic_path`` and write half a file: one into the
fold's checkpoint directory, killed with SIGKILL there (its temporary file stays behind, as after
a preemption or an OOM kill), one into the fold's output directory, still alive and writing.
A fold that then starts removes the dead writer's file and leaves the live writer's alone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from faultkit import MODEL, TRAIN

from bench.synthetic import fit_synthetic

pytestmark = pytest.mark.faults

WRITER = textwrap.dedent(
    """
    import sys, time
    from fvc.io import atomic_path

    with atomic_path(sys.argv[1]) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(b"half of a checkpoint" * 50_000)
            fh.flush()
            print("writing", flush=True)
            time.sleep(120)
    """
)


def start_writer(dest: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(dest)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "writing"
    return proc


def temps(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.tmp"))


def test_a_fold_removes_a_killed_writers_temp_file_and_never_a_live_ones(
    fault_inputs, tmp_path
) -> None:
    ck, out = tmp_path / "ck", tmp_path / "out"
    dead = start_writer(ck / "latest_checkpoint.pt")
    live = start_writer(out / "best_model.pt")
    try:
        os.kill(dead.pid, signal.SIGKILL)
        dead.wait(30)
        (left,) = temps(ck)
        assert f".fvc{dead.pid}." in left.name and left.stat().st_size == 1_000_000
        (writing,) = temps(out)
        fit_synthetic(fault_inputs, tmp_path, MODEL, {**TRAIN, "epochs": 1}, device="cpu")
        assert not left.exists()  # the killed writer's file is gone
        assert writing.exists() and temps(out) == [writing]  # the live writer's is untouched
        assert (ck / "latest_checkpoint.pt").is_file() and (out / "metrics.json").is_file()
    finally:
        for proc in (dead, live):
            proc.kill()
            proc.wait(30)
