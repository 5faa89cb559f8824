"""Which device a train job uses: ``train.device``, and one GPU per local train job.

Snakemake counts GPUs for local jobs (``--resources gpu=N`` with the train rule's
``resources: gpu=1``) but does not say *which* GPU a job may use, so every fold would land on
``cuda:0``. :func:`claim_gpu_slot` gives each train job its own GPU: it takes an exclusive
``flock`` on the lock file of the first free GPU and sets ``CUDA_VISIBLE_DEVICES`` to that one
GPU before CUDA is initialised, so ``cuda:0`` inside the job is its own GPU. The kernel drops
the lock when the process ends, however it ends (exit, exception, SIGKILL), so a slot can never
leak.

Which GPUs are shared out (:func:`visible_gpus`):

- ``CUDA_VISIBLE_DEVICES`` set: its entries as given (indices, or ``GPU-…``/``MIG-…`` UUIDs),
  up to the first entry that is neither, as CUDA does (``-1`` or ``NoDevFiles`` hide every
  GPU). This is how a user restricts a workstation run and how SLURM hands GPUs to a batch
  script, an ``srun`` step or an interactive allocation (``CUDA_VISIBLE_DEVICES=0,1,2,3``
  inside a 4-GPU ``salloc``); the entries are kept as given so a job's GPU is the same device
  its parent saw.
- unset, under SLURM (``SLURM_JOB_ID``): none. SLURM sets ``CUDA_VISIBLE_DEVICES`` wherever it
  made GPUs usable, so without it this process is in a job without GPUs, or in a bare
  ``salloc`` shell on the submit host whose GPUs, if any, are not the allocation's.
- unset, outside SLURM: every GPU of the machine (``nvidia-smi -L``), as indices ``0..n-1``.

``$FVC_GPU_COUNT`` caps how many are used (tests fake GPUs on a CPU machine with it; ``0``
turns the allocator off). Nothing happens when no GPU is left, nor when
``CUDA_VISIBLE_DEVICES`` names exactly one GPU: somebody chose it for this process (SLURM for a
job given one GPU, or the user), there is nothing to share out and no reason to serialise jobs
behind a lock. A single GPU found by ``nvidia-smi`` is still locked, so that two local train
jobs never share it.

Lock files are ``gpu<entry>.lock`` in ``$FVC_GPU_SLOT_DIR`` (default
``<tmp>/fvc-gpu-slots-<uid>``). Under SLURM they sit in a subfolder per allocation
(``slurm-<job id>[.<step id>]``) because SLURM's entries are not node-wide names: with device
cgroups (``ConstrainDevices``) the first GPU of every job is ``0``, and two allocations on one
node keyed by the bare entry would wait for each other's locks although they hold different
GPUs. Outside SLURM an entry names the same GPU for every process of the user, so two runs that
export overlapping lists share the locks and never put two jobs on one GPU.

This module does not import torch at import time (the allocator must run before CUDA is
initialised, and its tests start many light processes).
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: Caps the number of GPUs (tests fake a count on a CPU machine; users may limit it).
GPU_COUNT_ENV = "FVC_GPU_COUNT"
#: Folder of the slot lock files (default: ``<tmp>/fvc-gpu-slots-<uid>``).
SLOT_DIR_ENV = "FVC_GPU_SLOT_DIR"
#: SLURM variables that say an allocation has GPUs on this node (used for a hint only).
SLURM_GPU_ENVS = ("SLURM_STEP_GPUS", "SLURM_JOB_GPUS", "SLURM_GPUS_ON_NODE")

_ENTRY = re.compile(r"\d+|(GPU|MIG)-\S+")


def gpu_count(env: Mapping[str, str] | None = None) -> int:
    """GPUs here, without initialising CUDA: ``$FVC_GPU_COUNT``, else ``nvidia-smi -L``."""
    env = os.environ if env is None else env
    if env.get(GPU_COUNT_ENV):
        return int(env[GPU_COUNT_ENV])
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def parse_visible_devices(value: str) -> list[str]:
    """The entries of a ``CUDA_VISIBLE_DEVICES`` value, as given, that CUDA would enumerate.

    CUDA stops at the first entry that is not a device index or UUID (``0,2,-1,1`` shows 0
    and 2), so the list stops there too; a repeated entry is kept once, or two jobs could be
    given the same GPU under two slots.
    """
    out: list[str] = []
    for raw in value.split(","):
        entry = raw.strip()
        if not _ENTRY.fullmatch(entry):
            break
        if entry not in out:
            out.append(entry)
    return out


def visible_gpus(env: Mapping[str, str] | None = None) -> list[str]:
    """The GPUs this process may share out among train jobs, as ``CUDA_VISIBLE_DEVICES``
    entries (the rule is in the module docstring); ``$FVC_GPU_COUNT`` caps the list."""
    env = os.environ if env is None else env
    cvd = env.get("CUDA_VISIBLE_DEVICES")
    if cvd is not None:
        gpus = parse_visible_devices(cvd)
    elif env.get("SLURM_JOB_ID"):
        gpus = []
    else:
        gpus = [str(i) for i in range(gpu_count(env))]
    if env.get(GPU_COUNT_ENV):
        gpus = gpus[: max(int(env[GPU_COUNT_ENV]), 0)]
    return gpus


def slot_dir(env: Mapping[str, str] | None = None) -> Path:
    """Folder of this process's lock files: per user, and per allocation under SLURM."""
    env = os.environ if env is None else env
    default = Path(tempfile.gettempdir()) / f"fvc-gpu-slots-{os.getuid()}"
    d = Path(env.get(SLOT_DIR_ENV) or default)
    if env.get("SLURM_JOB_ID"):
        scope = "slurm-" + env["SLURM_JOB_ID"]
        if env.get("SLURM_STEP_ID"):
            scope += "." + env["SLURM_STEP_ID"]
        d = d / _file_safe(scope)
    return d


def lock_name(entry: str) -> str:
    """``gpu<entry>.lock``; old-style MIG names (``MIG-GPU-<uuid>/1/0``) hold slashes."""
    return f"gpu{_file_safe(entry)}.lock"


def _file_safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", s)


@dataclass
class GpuSlot:
    """A claimed GPU: its position in the visible list, its ``CUDA_VISIBLE_DEVICES`` entry and
    the open lock file (closing it releases the slot)."""

    index: int
    device: str
    fd: int

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


_held: GpuSlot | None = None  # the process's slot: released when the process ends


def claim_gpu_slot(poll_s: float = 2.0) -> GpuSlot | None:
    """Claim a free GPU for this process and set ``CUDA_VISIBLE_DEVICES`` to it alone.

    Returns None and changes nothing when no GPU is visible or ``CUDA_VISIBLE_DEVICES`` already
    names a single GPU (see the module docstring). When every slot is taken it waits (logging
    once): at most one train job per GPU, even if Snakemake was started without
    ``--resources gpu=N``.
    """
    global _held
    if _held is not None:
        return _held
    env = os.environ
    gpus = visible_gpus(env)
    if not gpus:
        if env.get("SLURM_JOB_ID") and "CUDA_VISIBLE_DEVICES" not in env:
            hints = [f"{k}={env[k]}" for k in SLURM_GPU_ENVS if env.get(k)]
            if env.get("SLURM_GPUS_ON_NODE") == "0":  # a count, unlike the two index lists
                hints = []
            if hints:
                log.warning(
                    "SLURM job %s has GPUs (%s) but CUDA_VISIBLE_DEVICES is not set here "
                    "(a bare salloc shell runs on the submit host): no GPU is assigned; "
                    "start Snakemake inside srun or sbatch to spread train jobs over them",
                    env["SLURM_JOB_ID"],
                    ", ".join(hints),
                )
        return None
    if len(parse_visible_devices(env.get("CUDA_VISIBLE_DEVICES", ""))) == 1:
        return None  # chosen for us; a longer list capped to one by FVC_GPU_COUNT is still cut
    d = slot_dir(env)
    d.mkdir(parents=True, exist_ok=True)
    n = len(gpus)
    waited = False
    while True:
        for i, entry in enumerate(gpus):
            fd = os.open(d / lock_name(entry), os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())  # who holds it, for a curious user
            os.environ["CUDA_VISIBLE_DEVICES"] = entry
            _held = GpuSlot(i, entry, fd)
            log.info("GPU slot %d of %d (%s): CUDA_VISIBLE_DEVICES=%s", i, n, d, entry)
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
