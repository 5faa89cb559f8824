"""Which device a train job uses: ``train.device`` and one GPU per job on a workstation.

Snakemake counts GPUs for local jobs (``--resources gpu=N`` with the train rule's
``resources: gpu=1``) but does not say *which* GPU a job may use, so every fold would land on
``cuda:0``. :func:`claim_gpu_slot` gives each train job its own GPU: it takes an exclusive
``flock`` on ``<slot dir>/gpu<i>.lock`` for the first free ``i`` and sets
``CUDA_VISIBLE_DEVICES=i`` before CUDA is initialised. The kernel drops the lock when the process
ends, however it ends (exit, exception, SIGKILL), so a slot can never leak. Under SLURM
(``SLURM_JOB_ID`` set) or when ``CUDA_VISIBLE_DEVICES`` is already set, the GPU was chosen by
someone else and the allocator stays out of the way.

This module does not import torch at import time (the allocator must run before CUDA is
initialised, and its tests start many light processes).
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: Overrides the number of GPUs (tests fake a count on a CPU machine; users may limit it).
GPU_COUNT_ENV = "FVC_GPU_COUNT"
#: Folder of the slot lock files (default: ``<tmp>/fvc-gpu-slots-<uid>``).
SLOT_DIR_ENV = "FVC_GPU_SLOT_DIR"


def gpu_count() -> int:
    """GPUs here, without initialising CUDA: ``$FVC_GPU_COUNT``, else ``nvidia-smi -L``."""
    if os.environ.get(GPU_COUNT_ENV):
        return int(os.environ[GPU_COUNT_ENV])
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def slot_dir() -> Path:
    default = Path(tempfile.gettempdir()) / f"fvc-gpu-slots-{os.getuid()}"
    return Path(os.environ.get(SLOT_DIR_ENV) or default)


@dataclass
class GpuSlot:
    """A claimed GPU: its index and the open lock file (closing it releases the slot)."""

    index: int
    fd: int

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


_held: GpuSlot | None = None  # the process's slot: released when the process ends


def claim_gpu_slot(poll_s: float = 2.0) -> GpuSlot | None:
    """Claim a free GPU slot for this process and set ``CUDA_VISIBLE_DEVICES`` to it.

    Returns None (and changes nothing) under SLURM, when ``CUDA_VISIBLE_DEVICES`` is already
    set, or without GPUs. When every slot is taken it waits (logging once): at most one train
    job per GPU, even if Snakemake was started without ``--resources gpu=N``.
    """
    global _held
    if _held is not None:
        return _held
    if os.environ.get("SLURM_JOB_ID") or os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        return None
    n = gpu_count()
    if n <= 0:
        return None
    d = slot_dir()
    d.mkdir(parents=True, exist_ok=True)
    waited = False
    while True:
        for i in range(n):
            fd = os.open(d / f"gpu{i}.lock", os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())  # who holds it, for a curious user
            os.environ["CUDA_VISIBLE_DEVICES"] = str(i)
            _held = GpuSlot(i, fd)
            log.info("GPU slot %d of %d (%s): CUDA_VISIBLE_DEVICES=%d", i, n, d, i)
            return _held
        if not waited:
            log.info("all %d GPU slots in %s are taken; waiting for a free one", n, d)
            waited = True
        time.sleep(poll_s)


def pick_device(spec: str = "auto") -> torch.device:
    """``train.device``: ``auto`` (the job's GPU if one is visible, else the CPU), ``cpu``,
    ``cuda`` or ``cuda:N``; asking for CUDA where there is none is a one-line error."""
    import torch

    from fvc.config import ConfigError

    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "(unset)")
    if spec == "auto":
        if torch.cuda.is_available():
            dev = torch.device("cuda", torch.cuda.current_device())
            log.info(
                "train.device auto: %s (%s, CUDA_VISIBLE_DEVICES=%s)",
                dev,
                torch.cuda.get_device_name(dev),
                visible,
            )
            return dev
        log.info(
            "train.device auto: cpu (no CUDA device visible, CUDA_VISIBLE_DEVICES=%s)", visible
        )
        return torch.device("cpu")
    dev = torch.device(spec)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"train.device: {spec!r} asked for, but no CUDA device is visible "
                f"(torch.cuda.is_available() is False, CUDA_VISIBLE_DEVICES={visible}); "
                "use train.device: auto or cpu"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(
                f"train.device: {spec!r} but only {torch.cuda.device_count()} CUDA device(s) "
                f"are visible (CUDA_VISIBLE_DEVICES={visible})"
            )
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    log.info("train.device %s: %s", spec, dev)
    return dev
