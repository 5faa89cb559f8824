"""SIGKILL a training process mid-epoch or at an epoch boundary, rerun it: same final weights."""

from __future__ import annotations

import json

import pytest
from faultkit import Trainer, assert_bit_identical, kill, wait_until, weights

pytestmark = pytest.mark.faults


def test_sigkill_mid_epoch_then_rerun_is_bit_identical(fault_inputs, fault_reference, tmp_path):
    t = Trainer(fault_inputs, tmp_path)
    proc = t.start()

    def mid_epoch_two() -> bool:  # a mid-epoch checkpoint of epoch 2 is on disk
        s = t.latest() if (t.ck / "latest_checkpoint.pt").exists() else None
        return s is not None and s["epoch"] == 1 and s["batch_in_epoch"] >= 2

    wait_until(proc, mid_epoch_two)
    assert kill(proc) == -9
    state = t.latest()
    assert state["epoch"] == 1 and 0 < state["batch_in_epoch"] < 24  # really mid-epoch
    assert not (tmp_path / "out" / "metrics.json").exists()

    done = t.run()
    assert done.returncode == 0, done.stderr
    assert f"resuming from latest_checkpoint.pt (epoch 2 batch {state['batch_in_epoch']}" in (
        t.log_text()
    )
    assert_bit_identical(weights(tmp_path), fault_reference)
    events = [json.loads(x) for x in (tmp_path / "out/memory.jsonl").read_text().splitlines()]
    starts = [e for e in events if e["event"] == "stage_start"]
    assert [s["resumed"] for s in starts] == [False, True]
    # every epoch trained once: one epoch_end each
    assert [e["epoch"] for e in events if e["event"] == "epoch_end"] == [1, 2, 3]


def test_sigkill_at_epoch_boundary_then_rerun_is_bit_identical(
    fault_inputs, fault_reference, tmp_path
):
    t = Trainer(fault_inputs, tmp_path, {"checkpoint_every_n_batches": 0})  # epoch ends only
    proc = t.start()
    # without periodic checkpoints the first latest_checkpoint.pt is epoch 1's end
    wait_until(proc, lambda: (t.ck / "latest_checkpoint.pt").exists())
    assert kill(proc) == -9
    state = t.latest()
    assert (state["epoch"], state["batch_in_epoch"]) == (1, 0)

    done = t.run()
    assert done.returncode == 0, done.stderr
    assert "resuming from latest_checkpoint.pt (end of epoch 1)" in t.log_text()
    assert_bit_identical(weights(tmp_path), fault_reference)
