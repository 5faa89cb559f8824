"""Resume: checkpoint files, the fingerprint a resume must match, the resume decision, and the
background writer.

A run's checkpoint directory (``runs/<exp>/checkpoints/fold_<k>/``, ``.../final/``) is
deliberately *not* a Snakemake output: Snakemake deletes a failed job's outputs before retrying
it, which would throw the resume state away. It holds ``latest_checkpoint.pt`` and
``checkpoint_epoch_<e>.pt`` (the last few, plus the best epoch's, which holds the best weights:
they are stored once), each written to a temporary file, fsynced and renamed (``fvc.io``) so a
kill never leaves a half-written file under a final name, and read with
``torch.load(weights_only=True)`` (so the payload holds only tensors and plain Python values).
:class:`Checkpointer` writes the periodic ones in a background thread. What goes into a
checkpoint is :func:`fvc.train.state.make_checkpoint`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fvc.config import operational_keys
from fvc.io import atomic_path, temp_prefix
from fvc.memory import MemoryLog, aggressive_gc, error_line, is_oom_error
from fvc.train.state import FORMAT

log = logging.getLogger(__name__)

LATEST = "latest_checkpoint.pt"
EPOCH_RE = re.compile(r"^checkpoint_epoch_(\d+)\.pt$")
TIMELINE = "memory.jsonl"


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used (truncated, corrupt, not ours)."""


def epoch_path(ckpt_dir: str | os.PathLike[str], epoch: int) -> Path:
    return Path(ckpt_dir) / f"checkpoint_epoch_{epoch}.pt"


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Atomically write ``state`` with ``torch.save`` (temp file + fsync + rename)."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load with ``weights_only=True``; any failure is a :class:`CheckpointError`."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a format-{FORMAT} fvc checkpoint")
    return state


def link_or_copy(src: str | os.PathLike[str], dest: str | os.PathLike[str]) -> None:
    """Atomically make ``dest`` hold ``src``'s bytes: a hard link (no second write), else a copy."""
    src, dest = Path(src), Path(dest)
    tmp = dest.with_name(f"{temp_prefix(dest.name)}tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
    os.replace(tmp, dest)


def epoch_checkpoints(ckpt_dir: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """``(epoch, path)`` of the per-epoch checkpoints, newest first."""
    d = Path(ckpt_dir)
    found = [
        (int(m.group(1)), p)
        for p in d.glob("checkpoint_epoch_*.pt")
        if (m := EPOCH_RE.match(p.name))
    ]
    return sorted(found, reverse=True)


def prune_epoch_checkpoints(
    ckpt_dir: str | os.PathLike[str], keep: int, best_epoch: int | None = None
) -> None:
    """Delete all but the newest ``keep`` per-epoch checkpoints and the best epoch's."""
    for e, path in epoch_checkpoints(ckpt_dir)[max(keep, 1) :]:
        if e != best_epoch:
            path.unlink(missing_ok=True)


# ---------------------------------------------------------------- fingerprint


def file_digest(path: str | os.PathLike[str], full_limit: int = 64 << 20) -> str:
    """SHA-256 of a file: whole content up to ``full_limit`` bytes, else size + 64 sampled blocks.

    Sampling keeps a resume check on a multi-GB clip cache to milliseconds; regenerated clips
    differ almost everywhere, and the small parquet files (splits, manifests) are hashed fully.
    """
    path = Path(path)
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        if size <= full_limit:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        else:
            block = 64 << 10
            for off in np.linspace(0, size - block, 64).astype(np.int64):
                fh.seek(int(off))
                h.update(fh.read(block))
    return h.hexdigest()


def fingerprint(
    stream: int,
    model_cfg: dict[str, Any],
    train_cfg: dict[str, Any],
    inputs: dict[str, str | os.PathLike[str]],
) -> str:
    """Identity of what a run computes: a resume is only valid under the same one.

    Covers the run's random stream (the fold, or the final model's), the model and training
    configuration (without keys that only change how state is saved) and the content of the
    input files. ``memory:`` settings are left out: they change how batches are computed, not
    what is computed. (The payload's key is ``fold`` for every stream: checkpoints written
    before targets existed keep resuming.)
    """
    payload = {
        "format": FORMAT,
        "fold": int(stream),
        "model": model_cfg,
        "train": {k: v for k, v in sorted(train_cfg.items()) if k not in operational_keys("train")},
        "inputs": {name: file_digest(p) for name, p in sorted(inputs.items())},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


# ---------------------------------------------------------------- resume decision


@dataclass
class ResumeDecision:
    """What :func:`choose_resume` found: a state to resume from (or None) and why."""

    state: dict[str, Any] | None
    source: Path | None
    reason: str


def set_aside(ckpt_dir: Path) -> Path:
    """Rename the directory to ``<name>.old-<timestamp>`` (kept for inspection) and recreate it.

    Only the newest set-aside copy is kept: older ones are deleted (and the deletion logged),
    so repeated config changes do not pile up ~GiB checkpoint folders.
    """
    older = sorted(ckpt_dir.parent.glob(f"{ckpt_dir.name}.old-*"))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest = ckpt_dir.with_name(f"{ckpt_dir.name}.old-{stamp}")
    n = 1
    while dest.exists():
        dest = ckpt_dir.with_name(f"{ckpt_dir.name}.old-{stamp}-{n}")
        n += 1
    ckpt_dir.rename(dest)
    ckpt_dir.mkdir(parents=True)
    for old in older:
        shutil.rmtree(old, ignore_errors=True)
        log.info("removed the older set-aside checkpoint folder %s (keeping %s)", old, dest)
    return dest


def clear(ckpt_dir: Path) -> None:
    """Remove this fold's resume files (a finished fold that is being rerun on purpose)."""
    for path in [ckpt_dir / LATEST, ckpt_dir / TIMELINE]:
        path.unlink(missing_ok=True)
    for _, path in epoch_checkpoints(ckpt_dir):
        path.unlink(missing_ok=True)


def choose_resume(
    ckpt_dir: str | os.PathLike[str], fp: str, validate: Any = None, retry: bool = False
) -> ResumeDecision:
    """Decide between resuming and a fresh start (the directory is prepared for the latter).

    - newest usable checkpoint (latest, else newest epoch checkpoint, with a warning) with the
      same fingerprint and not complete -> resume from it; usable = readable, its best epoch's
      checkpoint present and ``validate(state)`` passing (keys, shapes): a checkpoint that loads
      but lacks keys or has wrong shapes falls back like a corrupt one;
    - different fingerprint (config or inputs changed) -> fresh, old directory kept aside;
    - complete and ``retry`` (the scheduler's retry of a job reported failed after its training
      finished: its outputs were deleted, e.g. after a status or file-system glitch) -> the
      complete state, whose outputs are published again without training;
    - complete otherwise (a forced rerun of a finished fold) -> fresh;
    - nothing usable -> fresh (unusable files kept aside).
    """
    d = Path(ckpt_dir)
    d.mkdir(parents=True, exist_ok=True)
    candidates = [d / LATEST] + [p for _, p in epoch_checkpoints(d)]
    existing = [p for p in candidates if p.exists()]
    state, source = None, None
    for path in existing:
        try:
            state, source = load_checkpoint(path), path
            if state.get("fingerprint") == fp and (retry or not state.get("complete")):
                _check_usable(d, path, state, validate)
            break
        except CheckpointError as exc:
            state = None
            log.warning("%s; falling back to an older checkpoint", exc)
    if state is None:
        if existing:
            old = set_aside(d)
            return ResumeDecision(None, None, f"no usable checkpoint (kept in {old}); fresh start")
        return ResumeDecision(None, None, "no checkpoint; fresh start")
    if state.get("fingerprint") != fp:
        old = set_aside(d)
        return ResumeDecision(
            None, None, f"config or inputs changed since {source}; previous state kept in {old}"
        )
    if state.get("complete") and retry:
        return ResumeDecision(
            state, source, f"{source.name} is complete: publishing its outputs again (a retry)"
        )
    if state.get("complete"):
        clear(d)
        return ResumeDecision(None, None, "previous run of this fold completed; fresh start")
    where = f"epoch {state['epoch'] + 1} batch {state['batch_in_epoch']}"
    if state["batch_in_epoch"] == 0:
        where = f"end of epoch {state['epoch']}"
    return ResumeDecision(state, source, f"resuming from {source.name} ({where})")


def _check_usable(d: Path, path: Path, state: dict[str, Any], validate: Any) -> None:
    best = state.get("best") or {}
    if best and not epoch_path(d, best["epoch"]).exists():
        raise CheckpointError(
            f"{path}: its best epoch's checkpoint {epoch_path(d, best['epoch']).name} "
            "(the best weights) is missing"
        )
    if validate is not None:
        try:
            validate(state)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{path}: unusable checkpoint ({exc})") from exc


# ---------------------------------------------------------------- writing on a cadence


def snapshot(obj: Any) -> Any:
    """A copy of a checkpoint dict that later training steps cannot change.

    CUDA tensors are copied to (pinned) host memory asynchronously, CPU tensors cloned, and
    lists/dicts copied; the caller records a CUDA event after this and the writer waits on it.
    """
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        return t.to("cpu", non_blocking=True) if t.is_cuda else t.clone()
    if isinstance(obj, dict):
        return {k: snapshot(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(snapshot(v) for v in obj)
    return obj


class Checkpointer:
    """Writes one fold's checkpoints: on a cadence in the background, or synchronously.

    The cadence (``train.checkpoint_every_n_batches`` and/or ``train.checkpoint_every_s``)
    writes ``latest_checkpoint.pt`` off the training thread: :func:`snapshot` copies the state
    to host memory (the only time the training thread spends), a thread writes it with the same
    temp file + fsync + rename. At most one write is in flight: a write that falls due while
    one runs is kept pending and made at the first batch after that one ends (whatever the
    cadence), so the gap between checkpoints never doubles. An out-of-memory error while taking
    the snapshot skips that checkpoint (logged, event ``checkpoint_oom``); the next due one
    retries. :meth:`save` (epoch ends, a stop, the end of the fold) first waits for that
    thread, then writes synchronously: what it returns from is on disk.
    """

    def __init__(
        self,
        ckpt_dir: str | os.PathLike[str],
        make_state: Callable[[bool], dict[str, Any]],  # the dict with live tensors
        every_n_batches: int = 0,
        every_s: float = 0.0,
        memlog: MemoryLog | None = None,
    ) -> None:
        self.dir = Path(ckpt_dir)
        self.memlog = memlog
        self.pending = False  # due while a write was in flight: write at the next batch
        self.make_state = make_state
        self.every_n, self.every_s = int(every_n_batches), float(every_s)
        self.last = time.monotonic()
        self.background_writes = 0
        self.blocking_s = 0.0  # training-thread time spent on background writes (snapshots)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def due(self, batch_in_epoch: int, n_batches: int) -> bool:
        """Whether a background write is due after batch ``batch_in_epoch`` of ``n_batches``."""
        if batch_in_epoch >= n_batches:
            return False  # the epoch end writes one anyway
        if self.pending:
            return True
        if self.every_n and batch_in_epoch % self.every_n == 0:
            return True
        return bool(self.every_s) and time.monotonic() - self.last >= self.every_s

    def save_background(self) -> bool:
        """Start writing ``latest_checkpoint.pt`` in the background; False if one is in flight
        (the write stays pending) or the snapshot ran out of memory (skipped)."""
        if self._thread is not None and self._thread.is_alive():
            self.pending = True
            return False
        self.wait()
        self.pending = False
        t0 = time.perf_counter()
        error = None
        try:
            state = snapshot(self.make_state(False))
        except Exception as exc:
            if not is_oom_error(exc):
                raise
            error = error_line(exc)
        if error is not None:  # outside the except block: its traceback pins the copies
            aggressive_gc()
            self.last = time.monotonic()
            log.warning(
                "out of memory taking a checkpoint snapshot (%s): skipped, the next due "
                "checkpoint retries",
                error,
            )
            if self.memlog is not None:
                self.memlog.event("checkpoint_oom", error=error)
            return False
        event = None
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            event = torch.cuda.Event()
            event.record()
        self._thread = threading.Thread(
            target=self._write, args=(self.dir / LATEST, state, event), name="fvc-checkpoint"
        )
        self._thread.start()
        self.last = time.monotonic()
        self.background_writes += 1
        self.blocking_s += time.perf_counter() - t0
        return True

    def _write(self, path: Path, state: dict[str, Any], event: Any) -> None:
        try:
            if event is not None:
                event.synchronize()  # the device-to-host copies have landed
            save_checkpoint(path, state)
        except BaseException as exc:  # reported by wait() on the training thread
            self._error = exc

    def wait(self) -> None:
        """Wait for a background write; a failed one is logged (the previous file is intact)."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            log.warning(
                "background checkpoint write failed (%s: %s); the previous checkpoint is intact",
                type(self._error).__name__,
                self._error,
            )
            self._error = None

    def save(self, path: str | os.PathLike[str] | None = None, complete: bool = False) -> None:
        """Write a checkpoint now (default: latest) and return once it is on disk."""
        self.wait()
        save_checkpoint(path or self.dir / LATEST, self.make_state(complete))
        self.last = time.monotonic()
        self.pending = False
