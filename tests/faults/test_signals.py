"""SIGTERM and SIGUSR1 (SLURM's warnings): finish the step, checkpoint, exit 75, resume exactly."""

from __future__ import annotations

import re
import signal

import pytest
from faultkit import Trainer, assert_bit_identical, kill, wait_until, weights

from fvc.train import EXIT_RESUMABLE

pytestmark = pytest.mark.faults


def test_sigterm_then_sigusr1_then_finish(fault_inputs, fault_reference, tmp_path) -> None:
    # no periodic checkpoints: the only mid-epoch checkpoints are the ones the signals cause
    t = Trainer(fault_inputs, tmp_path, {"checkpoint_every_n_batches": 0})

    proc = t.start()
    wait_until(proc, lambda: "epoch 1 [" in t.log_text())  # training is under way
    assert kill(proc, signal.SIGTERM) == EXIT_RESUMABLE
    first = t.latest()
    assert first is not None and not first["complete"]
    assert (first["epoch"], first["batch_in_epoch"]) > (0, 0)
    assert "received SIGTERM; checkpoint written" in t.log_text()

    proc = t.start()
    wait_until(proc, lambda: re.search(r"resuming from(.|\n)*epoch \d+ \[", t.log_text()))
    assert kill(proc, signal.SIGUSR1) == EXIT_RESUMABLE
    second = t.latest()
    assert (second["epoch"], second["batch_in_epoch"]) > (first["epoch"], first["batch_in_epoch"])
    assert "received SIGUSR1; checkpoint written" in t.log_text()

    done = t.run()
    assert done.returncode == 0, done.stderr
    assert_bit_identical(weights(tmp_path), fault_reference)
    assert not (tmp_path / "ck.old").exists()
