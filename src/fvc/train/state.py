"""What a training run holds, and the ONE checkpoint dict that saves it.

- :class:`Position`: where a run stands, plain Python values only (every field is a key of
  the checkpoint dict);
- :class:`Run`: the live objects the loop functions share (model, optimizer, schedule, scaler,
  device, memory policy, ...), built by :func:`new_run`;
- :func:`make_checkpoint` / :func:`check_checkpoint` / :func:`restore_checkpoint`: the dict
  that lets a killed run continue bit-identically, its validation and its restoration.

Which file a checkpoint goes to, and whether to resume from one, is :mod:`fvc.train.resume`.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from fvc.config import TrainConfig
from fvc.datasets import InputNorm, class_weights
from fvc.memory import MemoryLog, MemoryPolicy
from fvc.train.optim import make_optimizer, make_scheduler
from fvc.train.precision import make_scaler, resolve_precision

log = logging.getLogger(__name__)

#: Version of the checkpoint dict. 2: no second copy of the best weights (the best epoch's
#: checkpoint file is kept instead).
FORMAT = 2


@dataclass
class Position:
    """Where a run stands. Every field is a key of the checkpoint dict (plain Python values)."""

    micro_batch_size: int  # may shrink after OOM; kept for the rest of the run
    eval_batch_size: int
    epoch: int = 0  # completed epochs
    batch_in_epoch: int = 0  # batches of epoch ``epoch + 1`` already consumed
    step: int = 0  # batches consumed in this run (GC cadence, skip fraction)
    loss_sum: float = 0.0  # sum of per-sample train losses in the current epoch
    samples: int = 0
    seconds: float = 0.0  # time spent in the current epoch (across attempts)
    skipped: int = 0  # batches skipped after OOM at the minimum micro-batch
    bad_epochs: int = 0  # epochs without improvement (early stopping)
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    # epoch, value, val_loss, metrics, probs; the weights are checkpoint_epoch_<epoch>.pt's
    best: dict[str, Any] = field(default_factory=dict)


@dataclass
class Run:
    """What the loop functions share for one run (a plain container, no behaviour)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler | None  # with precision fp16 only (CUDA or CPU)
    device: torch.device
    precision: str  # off, bf16 or fp16 (``auto`` resolved for the device)
    loss_weights: torch.Tensor  # per class, on device
    norm: InputNorm  # input mean/std on device, made once per run
    policy: MemoryPolicy
    memlog: MemoryLog | None
    pos: Position
    # sum of per-sample train losses not yet added to pos.loss_sum: kept on the device so a
    # step never waits for the GPU; folded in by flush_loss() when a value is needed
    pending_loss: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.pending_loss = torch.zeros((), dtype=torch.float64, device=self.device)


def flush_loss(run: Run) -> None:
    """Add the device-side loss sum to ``run.pos.loss_sum`` (one host-device sync)."""
    run.pos.loss_sum += float(run.pending_loss)
    run.pending_loss.zero_()


def new_run(
    model: nn.Module,
    train: TrainConfig | dict[str, Any],
    device: torch.device,
    labels: np.ndarray,
    policy: MemoryPolicy,
    memlog: MemoryLog | None,
    norm: InputNorm,
    micro_batch_size: int | None = None,
) -> Run:
    """A fresh :class:`Run` for ``model`` (already on ``device``).

    AdamW and the ``train.scheduler`` schedule (:mod:`fvc.train.optim`), a GradScaler for fp16,
    class weights from the training ``labels``; the micro-batch starts at ``micro_batch_size``
    (default and maximum: the batch size).
    """
    train = TrainConfig.of(train)
    optimizer = make_optimizer(model, train)
    precision, bs = resolve_precision(train.precision, device), train.batch_size
    return Run(
        model=model,
        optimizer=optimizer,
        scheduler=make_scheduler(optimizer, train),
        scaler=make_scaler(precision, device),
        device=device,
        precision=precision,
        loss_weights=class_weights(labels, train.class_weights).to(device),
        norm=norm,
        policy=policy,
        memlog=memlog,
        pos=Position(micro_batch_size=min(micro_batch_size or bs, bs), eval_batch_size=bs),
    )


def library_versions() -> dict[str, str]:
    """Versions that decide whether a resumed run can be bit-identical."""
    import fvc

    # str(): torch.__version__ is a TorchVersion, which weights_only loading refuses; the
    # installed torchvision's version from its metadata, so a small3d job never imports it
    return {
        "python": sys.version.split()[0],
        "torch": str(torch.__version__),
        "torchvision": importlib.metadata.version("torchvision"),
        "numpy": str(np.__version__),
        "fvc": str(fvc.__version__),
    }


def capture_rng() -> dict[str, Any]:
    """torch (CPU and CUDA), numpy-global and python RNG states as weights_only-loadable values."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(cuda),
        "numpy": [str(name), [int(k) for k in keys], int(pos), int(has_gauss), float(cached)],
        "python": random.getstate(),
    }


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def make_checkpoint(run: Run, fp: str, complete: bool = False) -> dict[str, Any]:
    """The ONE checkpoint dict: everything needed to continue bit-identically.

    Keys: ``format``, ``fingerprint``, ``complete``, every :class:`Position` field (position,
    micro-batch size, running loss, history, best record), the model, optimizer, scheduler and
    scaler states, ``rng`` (torch/CUDA/numpy/python) and library ``versions``. The best
    epoch's weights are not repeated here: they are ``checkpoint_epoch_<best epoch>.pt``'s.
    The tensors are the live ones: :class:`fvc.train.resume.Checkpointer` copies them before a
    background write.
    """
    flush_loss(run)
    sched, scaler = run.scheduler, run.scaler
    return {
        "format": FORMAT,
        "fingerprint": fp,
        "complete": complete,
        **dataclasses.asdict(run.pos),
        "model_state": run.model.state_dict(),
        "optimizer_state": run.optimizer.state_dict(),
        "scheduler_state": sched.state_dict() if sched is not None else None,
        "scaler_state": scaler.state_dict() if scaler is not None else None,
        "rng": capture_rng(),
        "versions": library_versions(),
        "saved_at": time.time(),
    }


def check_checkpoint(state: dict[str, Any], model: nn.Module) -> None:
    """Raise ``KeyError``/``ValueError`` unless ``state`` has every key of :func:`make_checkpoint`
    and weights of ``model``'s shapes (:func:`fvc.train.resume.choose_resume` then falls back)."""
    need = {"model_state", "optimizer_state", "scheduler_state", "scaler_state", "rng", "versions"}
    missing = sorted((need | {f.name for f in dataclasses.fields(Position)}) - set(state))
    if missing:
        raise KeyError(f"missing key(s) {', '.join(missing)}")
    ours, theirs = model.state_dict(), state["model_state"]
    if set(ours) != set(theirs):
        raise ValueError(f"weights of another model ({len(theirs)} tensors, expected {len(ours)})")
    bad = [k for k, v in ours.items() if tuple(theirs[k].shape) != tuple(v.shape)]
    if bad:
        got, want = tuple(theirs[bad[0]].shape), tuple(ours[bad[0]].shape)
        raise ValueError(f"{bad[0]} has shape {got}, expected {want}")


def restore_checkpoint(run: Run, state: dict[str, Any]) -> None:
    """Load a :func:`make_checkpoint` dict back (RNG last: building the model consumed some)."""
    run.model.load_state_dict(state["model_state"])
    run.optimizer.load_state_dict(state["optimizer_state"])
    if run.scheduler is not None and state["scheduler_state"] is not None:
        run.scheduler.load_state_dict(state["scheduler_state"])
    if run.scaler is not None and state["scaler_state"] is not None:
        run.scaler.load_state_dict(state["scaler_state"])
    for f in dataclasses.fields(Position):
        setattr(run.pos, f.name, state[f.name])
    now = library_versions()
    if state["versions"] != now:
        log.warning("checkpoint from %s, now %s: may not be bit-identical", state["versions"], now)
    restore_rng(state["rng"])
