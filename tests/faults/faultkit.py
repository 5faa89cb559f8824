"""Helpers of the real-fault tests: config, the training CLI as a subprocess, weight checks.

Training runs as a real subprocess (``python -m fvc.cli train``) so it can be SIGKILLed, signalled
or put under RLIMIT_AS; the reference runs in this process with the same config and thread
count, which on CPU gives bit-identical weights.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

from bench.synthetic import fold_inputs
from fvc.train import resume as ckpt

MODEL = {"name": "small3d", "dropout": 0.2}
# 48 train + 48 augmented clips of 8x48x48 -> 24 batches per epoch of ~40 ms each: slow enough
# to kill mid-epoch reliably, fast enough for CI
TRAIN = {"epochs": 3, "batch_size": 4, "checkpoint_every_n_batches": 2, "seed": 3}


def weights(root: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {
        "final": ckpt.load_checkpoint(root / "ck" / ckpt.LATEST)["model_state"],
        "best": torch.load(root / "out" / "best_model.pt", weights_only=True)["model_state"],
    }


def assert_bit_identical(a: dict, b: dict) -> None:
    for which in ("final", "best"):
        assert a[which].keys() == b[which].keys()
        for k in a[which]:
            assert torch.equal(a[which][k], b[which][k]), f"{which} {k}"


class Trainer:
    """Starts the training CLI on fold 0 of ``inputs`` with outputs under ``root``."""

    def __init__(self, inputs: dict, root: Path, train: dict | None = None, memory=None):
        self.inputs, self.root = inputs, root
        root.mkdir(parents=True, exist_ok=True)
        cfg = {"model": MODEL, "train": {**TRAIN, **(train or {})}, "memory": memory or {}}
        (root / "config.yaml").write_text(yaml.safe_dump(cfg))
        self.runs = 0

    @property
    def ck(self) -> Path:
        return self.root / "ck"

    def args(self) -> list[str]:
        fi = fold_inputs(self.inputs)
        return [
            "--config",
            str(self.root / "config.yaml"),
            "--fold",
            "0",
            "--clips",
            fi.clips,
            "--index",
            fi.index,
            "--splits",
            fi.splits,
            "--aug-clips",
            fi.aug_clips,
            "--aug-manifest",
            fi.aug_manifest,
            "--out-dir",
            str(self.root / "out"),
            "--checkpoint-dir",
            str(self.ck),
            "--threads",
            "1",
            "--device",
            "cpu",
        ]

    def start(self, prefix: list[str] | None = None, env: dict | None = None) -> subprocess.Popen:
        """A new attempt, logging to log_<n>.txt (``prefix`` replaces ``-m fvc.cli train``)."""
        self.runs += 1
        self.log = self.root / f"log_{self.runs}.txt"
        cmd = [
            sys.executable,
            *(prefix or ["-m", "fvc.cli", "train"]),
            *self.args(),
            "--log",
            str(self.log),
        ]
        return subprocess.Popen(
            cmd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )

    def run(self, timeout: float = 240) -> subprocess.CompletedProcess:
        proc = self.start()
        _, err = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(proc.args, proc.returncode, "", err)

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def latest(self) -> dict | None:
        try:
            return ckpt.load_checkpoint(self.ck / ckpt.LATEST)
        except ckpt.CheckpointError:
            return None


def wait_until(proc: subprocess.Popen, cond: Callable[[], bool], timeout: float = 180) -> None:
    """Poll ``cond`` every 5 ms while ``proc`` runs; fail if it exits or time runs out first."""
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return
        if proc.poll() is not None:
            raise AssertionError(f"trainer exited ({proc.returncode}) early: {proc.stderr.read()}")
        time.sleep(0.005)
    proc.kill()
    raise AssertionError("condition not reached in time")


def kill(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> int:
    os.kill(proc.pid, sig)
    proc.wait(timeout=120)
    return proc.returncode
