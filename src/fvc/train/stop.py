"""Stopping on purpose: SLURM's warning signals and the job's own time budget.

A stop is not a failure. The handler only sets a flag; the loop finishes the current step,
writes a checkpoint and raises :class:`TrainingInterrupted`; the job exits with
:data:`EXIT_RESUMABLE`, so the scheduler's retry (Snakemake ``retries``, SLURM requeue)
continues where this attempt stopped.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

import psutil

log = logging.getLogger(__name__)

#: Exit status after a deliberate stop with a checkpoint written (EX_TEMPFAIL: "try again").
EXIT_RESUMABLE = 75


class TrainingInterrupted(Exception):
    """Training stopped on purpose (signal or time budget) after writing a checkpoint, or after
    an OOM inside the optimizer update without saving the half-updated state."""


class StopControl:
    """Stop requests: SIGTERM/SIGUSR1 (SLURM's warning signals) and the job's time budget.

    The handler only sets a flag: the training loop finishes the current step, writes a
    checkpoint and exits non-zero, so the retried job resumes where this one stopped.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(
        self,
        runtime_min: float | None = None,
        margin_s: float = 0.0,
        started_at: float | None = None,
    ):
        # default: this process's start (the job's budget includes imports and set-up)
        self.started_at = psutil.Process().create_time() if started_at is None else started_at
        self.deadline: float | None = None
        if runtime_min:
            self.deadline = self.started_at + 60.0 * float(runtime_min) - float(margin_s)
            left = self.deadline - time.time()
            log.info(
                "time budget: runtime %.1f min, margin %.0f s -> checkpoint and stop in %.0f s",
                runtime_min,
                margin_s,
                left,
            )
            if left <= 0:
                log.warning(
                    "runtime %.1f min minus train.time_margin_s %.0f s leaves no training "
                    "time: each attempt trains one step; raise the runtime or lower the margin",
                    runtime_min,
                    margin_s,
                )
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        self.signal_name = signal.Signals(signum).name

    def __enter__(self) -> StopControl:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def reason(self) -> str | None:
        """Why training must stop now, or None."""
        if self.signal_name:
            return f"received {self.signal_name}"
        if self.deadline is not None and time.time() >= self.deadline:
            return "time budget (resources.runtime minus train.time_margin_s) used up"
        return None


def ignore_stop_signals(_: int) -> None:
    """DataLoader ``worker_init_fn``: workers get SLURM's signals too; only the main process
    decides how to stop."""
    for sig in StopControl.SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
