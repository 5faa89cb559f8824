"""Checkpoint files, fingerprints, the resume decision and stop requests."""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
import time

import numpy as np
import pytest
import torch

from fvc.memory import MemoryLog
from fvc.train import resume as ckpt
from fvc.train import state
from fvc.train.stop import StopControl


def _state(fp: str = "abc", complete: bool = False, epoch: int = 1, batch: int = 0) -> dict:
    return {
        "format": state.FORMAT,
        "fingerprint": fp,
        "complete": complete,
        "epoch": epoch,
        "batch_in_epoch": batch,
        "model_state": {"w": torch.arange(6.0).view(2, 3)},
        "history": [{"epoch": 1, "val_loss": 0.5}],
        "rng": state.capture_rng(),
    }


def test_save_load_roundtrip_with_weights_only(tmp_path) -> None:
    path = tmp_path / "c.pt"
    ckpt.save_checkpoint(path, _state())
    back = torch.load(path, weights_only=True)  # what any consumer does
    assert torch.equal(back["model_state"]["w"], torch.arange(6.0).view(2, 3))
    assert back["history"] == [{"epoch": 1, "val_loss": 0.5}]
    assert ckpt.load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temp file left


def test_failed_save_leaves_previous_checkpoint_intact(tmp_path) -> None:
    path = tmp_path / "latest_checkpoint.pt"
    ckpt.save_checkpoint(path, _state(epoch=1))
    with pytest.raises(Exception):  # noqa: B017 - torch.save cannot pickle a lambda
        ckpt.save_checkpoint(path, {**_state(epoch=2), "bad": lambda: None})
    assert ckpt.load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "foreign"])
def test_damaged_checkpoint_is_a_checkpoint_error(tmp_path, damage: str) -> None:
    path = tmp_path / "c.pt"
    ckpt.save_checkpoint(path, _state())
    raw = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        path.write_bytes(bytes(reversed(raw)))
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        torch.save({"some": "other file"}, path)
    with pytest.raises(ckpt.CheckpointError, match=r"c.pt"):
        ckpt.load_checkpoint(path)


def test_rng_capture_restore_reproduces_all_generators(tmp_path) -> None:
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    path = tmp_path / "rng.pt"
    ckpt.save_checkpoint(path, {"format": state.FORMAT, "rng": state.capture_rng()})

    def draw() -> tuple:
        return torch.rand(3), np.random.rand(3), random.random(), torch.nn.Dropout()(torch.ones(8))

    first = draw()
    state.restore_rng(ckpt.load_checkpoint(path)["rng"])
    second = draw()
    assert torch.equal(first[0], second[0]) and np.array_equal(first[1], second[1])
    assert first[2] == second[2] and torch.equal(first[3], second[3])


def test_fingerprint_tracks_maths_not_bookkeeping(tmp_path) -> None:
    data = tmp_path / "clips.npy"
    np.save(data, np.zeros((4, 2, 8, 8, 3), np.uint8))
    model, train = {"name": "small3d"}, {"lr": 0.01, "epochs": 3, "checkpoint_every_n_batches": 5}
    base = ckpt.fingerprint(0, model, train, {"clips": data})
    assert base == ckpt.fingerprint(0, model, train, {"clips": data})
    for key in (
        "checkpoint_every_n_batches",
        "checkpoint_every_s",
        "time_margin_s",
        "keep_epoch_checkpoints",
        "device",
        "num_workers",
    ):
        assert base == ckpt.fingerprint(0, model, {**train, key: 99}, {"clips": data}), key
    assert base != ckpt.fingerprint(1, model, train, {"clips": data})
    assert base != ckpt.fingerprint(0, model, {**train, "lr": 0.02}, {"clips": data})
    assert base != ckpt.fingerprint(0, {"name": "r3d_18"}, train, {"clips": data})
    np.save(data, np.ones((4, 2, 8, 8, 3), np.uint8))
    assert base != ckpt.fingerprint(0, model, train, {"clips": data})


def test_sampled_digest_of_large_files_sees_rewritten_content(tmp_path) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(1 << 20))
    sampled = ckpt.file_digest(path, full_limit=1 << 16)
    assert sampled == ckpt.file_digest(path, full_limit=1 << 16)
    path.write_bytes(os.urandom(1 << 20))
    assert sampled != ckpt.file_digest(path, full_limit=1 << 16)


def test_prune_and_link(tmp_path) -> None:
    for e in range(1, 6):
        ckpt.save_checkpoint(ckpt.epoch_path(tmp_path, e), _state(epoch=e))
    ckpt.prune_epoch_checkpoints(tmp_path, keep=2, best_epoch=1)
    assert [e for e, _ in ckpt.epoch_checkpoints(tmp_path)] == [5, 4, 1]  # 1 holds the best
    ckpt.prune_epoch_checkpoints(tmp_path, keep=2)
    assert [e for e, _ in ckpt.epoch_checkpoints(tmp_path)] == [5, 4]
    ckpt.link_or_copy(ckpt.epoch_path(tmp_path, 5), tmp_path / ckpt.LATEST)
    ckpt.save_checkpoint(ckpt.epoch_path(tmp_path, 5), _state(epoch=55))  # replaced, not edited
    assert ckpt.load_checkpoint(tmp_path / ckpt.LATEST)["epoch"] == 5


def test_resume_decisions(tmp_path, caplog) -> None:
    d = tmp_path / "fold_0"
    assert ckpt.choose_resume(d, "fp").state is None  # nothing yet

    ckpt.save_checkpoint(d / ckpt.LATEST, _state("fp", epoch=2, batch=3))
    found = ckpt.choose_resume(d, "fp")
    assert found.state["batch_in_epoch"] == 3 and "epoch 3 batch 3" in found.reason

    # latest truncated -> newest readable epoch checkpoint, with a warning
    ckpt.save_checkpoint(ckpt.epoch_path(d, 1), _state("fp", epoch=1))
    ckpt.save_checkpoint(ckpt.epoch_path(d, 2), _state("fp", epoch=2))
    (d / ckpt.LATEST).write_bytes((d / ckpt.LATEST).read_bytes()[:100])
    with caplog.at_level(logging.WARNING, logger="fvc.train.resume"):
        found = ckpt.choose_resume(d, "fp")
    assert found.source.name == "checkpoint_epoch_2.pt" and found.state["epoch"] == 2
    assert "latest_checkpoint.pt: unreadable" in caplog.text

    # a different fingerprint: fresh start, old state kept aside untouched
    found = ckpt.choose_resume(d, "other")
    assert found.state is None and "changed" in found.reason
    (old,) = tmp_path.glob("fold_0.old-*")
    assert (old / "checkpoint_epoch_2.pt").exists() and list(d.iterdir()) == []

    # completed (a forced rerun): fresh start, files cleared
    ckpt.save_checkpoint(d / ckpt.LATEST, _state("other", complete=True))
    ckpt.save_checkpoint(ckpt.epoch_path(d, 7), _state("other", epoch=7))
    found = ckpt.choose_resume(d, "other")
    assert found.state is None and "completed" in found.reason and list(d.iterdir()) == []

    # a state whose best epoch's checkpoint (the best weights) is gone is not usable
    ckpt.save_checkpoint(ckpt.epoch_path(d, 3), {**_state("other", epoch=3), "best": {"epoch": 3}})
    ckpt.save_checkpoint(d / ckpt.LATEST, {**_state("other", epoch=4), "best": {"epoch": 2}})
    with caplog.at_level(logging.WARNING, logger="fvc.train.resume"):
        found = ckpt.choose_resume(d, "other")
    assert found.source.name == "checkpoint_epoch_3.pt"
    assert "checkpoint_epoch_2.pt (the best weights) is missing" in caplog.text

    # nothing readable at all: fresh, the unreadable files kept aside for inspection; only the
    # newest set-aside folder is kept (and the removal logged)
    for p in d.iterdir():
        p.write_bytes(b"junk")
    with caplog.at_level(logging.INFO, logger="fvc.train.resume"):
        found = ckpt.choose_resume(d, "other")
    assert found.state is None and "no usable checkpoint" in found.reason
    (kept,) = tmp_path.glob("fold_0.old-*")
    assert (kept / ckpt.LATEST).read_bytes() == b"junk" and f"keeping {kept}" in caplog.text


def test_stop_control_time_budget() -> None:
    assert StopControl().reason() is None  # no budget, no signal
    now = time.time()
    stop = StopControl(runtime_min=1.0, margin_s=30, started_at=now - 20)  # 10 s left
    assert stop.reason() is None and 0 < stop.deadline - time.time() <= 10
    late = StopControl(runtime_min=1.0, margin_s=30, started_at=now - 31)
    assert "time budget" in late.reason()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_stop_control_signals(sig: signal.Signals) -> None:
    before = signal.getsignal(sig)
    with StopControl() as stop:
        os.kill(os.getpid(), sig)  # a real signal to this process
        time.sleep(0.01)
        assert stop.reason() == f"received {sig.name}"
    assert signal.getsignal(sig) == before


def test_background_writes_snapshot_the_state_and_keep_one_in_flight(tmp_path, monkeypatch):
    live = {"w": torch.zeros(1000, 1000)}
    pos = {"batch": 0}

    def make_state(complete: bool) -> dict:
        return {
            **_state(),
            "model_state": live,
            "batch_in_epoch": pos["batch"],
            "complete": complete,
        }

    release = threading.Event()
    real_save = ckpt.save_checkpoint

    def slow_save(path, state) -> None:  # a write that takes until the test says so
        release.wait(30)
        real_save(path, state)

    monkeypatch.setattr(ckpt, "save_checkpoint", slow_save)
    cp = ckpt.Checkpointer(tmp_path, make_state, every_n_batches=2)
    assert [cp.due(b, 10) for b in (1, 2, 3, 4, 10)] == [False, True, False, True, False]
    pos["batch"] = 2
    assert cp.save_background()
    live["w"].add_(1.0)  # training goes on while the thread writes
    pos["batch"] = 4
    assert not cp.save_background()  # one write in flight at most
    release.set()
    cp.wait()
    written = ckpt.load_checkpoint(tmp_path / ckpt.LATEST)
    assert written["batch_in_epoch"] == 2 and float(written["model_state"]["w"].max()) == 0.0
    cp.save(complete=True)  # synchronous: on disk when it returns
    final = ckpt.load_checkpoint(tmp_path / ckpt.LATEST)
    assert final["complete"] and float(final["model_state"]["w"].min()) == 1.0
    assert [p.name for p in tmp_path.iterdir()] == [ckpt.LATEST]  # no temp file left
    assert cp.background_writes == 1


def test_time_cadence_and_failed_background_write(tmp_path, caplog) -> None:
    cp = ckpt.Checkpointer(tmp_path, lambda c: {**_state(), "bad": lambda: None}, every_s=0.05)
    assert not cp.due(1, 10)
    time.sleep(0.06)
    assert cp.due(1, 10) and not cp.due(10, 10)
    ckpt.save_checkpoint(tmp_path / ckpt.LATEST, _state(epoch=7))
    assert cp.save_background()
    with caplog.at_level(logging.WARNING, logger="fvc.train.resume"):
        cp.wait()
    assert "background checkpoint write failed" in caplog.text
    assert ckpt.load_checkpoint(tmp_path / ckpt.LATEST)["epoch"] == 7  # intact
    assert not cp.due(1, 10)  # the cadence restarted


@pytest.mark.parametrize("cadence", [{"every_n_batches": 2}, {"every_s": 0.05}])
def test_a_write_due_while_one_runs_is_made_at_the_first_batch_after_it(
    tmp_path, monkeypatch, cadence: dict
) -> None:
    """A slow writer: the checkpoint that falls due while it runs is not dropped until the next
    multiple (or interval), it is written at the first batch after the running write ended."""
    pos = {"batch": 0}
    release = threading.Event()
    real_save = ckpt.save_checkpoint

    def slow_save(path, state) -> None:
        release.wait(30)
        real_save(path, state)

    monkeypatch.setattr(ckpt, "save_checkpoint", slow_save)
    cp = ckpt.Checkpointer(
        tmp_path, lambda c: {**_state(), "batch_in_epoch": pos["batch"]}, **cadence
    )
    written = []
    for batch in range(1, 9):
        pos["batch"] = batch
        time.sleep(0.06)  # every batch is due for the time cadence
        if batch == 5:
            release.set()  # the first write ends during batch 5
            cp.wait()
        if cp.due(batch, 20) and cp.save_background():
            written.append(batch)
    cp.wait()
    # the first write (batch 2 every 2 batches; batch 1 every 0.05 s) runs until batch 5; what
    # fell due meanwhile (batch 4; batches 2-4) is written at batch 5, not at 6 or later
    first = 2 if "every_n_batches" in cadence else 1
    assert written[:2] == [first, 5], written
    assert ckpt.load_checkpoint(tmp_path / ckpt.LATEST)["batch_in_epoch"] == written[-1]


def test_snapshot_oom_skips_that_checkpoint_and_the_next_due_one_retries(
    tmp_path, monkeypatch, caplog
) -> None:
    real = ckpt.snapshot
    calls = {"n": 0}

    def oom_once(obj):
        calls["n"] += 1
        if calls["n"] == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB (injected)")
        return real(obj)

    monkeypatch.setattr(ckpt, "snapshot", oom_once)
    log_path = tmp_path / "memory.jsonl"
    memlog = MemoryLog(log_path)
    cp = ckpt.Checkpointer(tmp_path, lambda c: _state(), every_n_batches=2, memlog=memlog)
    with caplog.at_level(logging.WARNING, logger="fvc.train.resume"):
        assert cp.due(2, 10) and not cp.save_background()
    assert "out of memory taking a checkpoint snapshot" in caplog.text
    assert not (tmp_path / ckpt.LATEST).exists() and not cp.pending
    assert not cp.due(3, 10)  # skipped, not pending: the next due one retries
    assert cp.due(4, 10) and cp.save_background()
    cp.wait()
    assert ckpt.load_checkpoint(tmp_path / ckpt.LATEST)["format"] == state.FORMAT
    assert [e["event"] for e in MemoryLog(log_path).read()] == ["checkpoint_oom"]
