"""The optimizer and its learning-rate schedule.

AdamW over one parameter group, or two when fine-tuning (``train.backbone_lr_scale``): the head
at ``train.lr`` and the backbone at ``lr * scale``. The schedule is per epoch; every kind of
``train.scheduler`` is defined once, in :data:`SCHEDULES`, in two forms: torch's own scheduler
(the plain schedule, kept so checkpoints written by it resume and results stay bit-identical)
and a closed form (the schedule after a ``train.warmup_epochs`` warm-up, a ``LambdaLR`` whose
factor is a function of the epoch, so a resumed run trains each epoch at the same rate).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from fvc.config import ConfigError, TrainConfig
from fvc.models import split_parameters

Optimizer = torch.optim.Optimizer


Native = Callable[[Optimizer, int], Any]
ClosedForm = Callable[[int, int], float]


def _step_native(optimizer: Optimizer, epochs: int) -> Any:
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, epochs // 3), gamma=0.1)


def _cosine_native(optimizer: Optimizer, epochs: int) -> Any:
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)


#: ``train.scheduler`` -> (torch scheduler over ``epochs``, or None for a constant rate;
#: closed-form factor of epoch ``e`` (0-based) of a schedule spanning ``span`` epochs).
SCHEDULES: dict[str, tuple[Native | None, ClosedForm]] = {
    "none": (None, lambda e, span: 1.0),
    "step": (_step_native, lambda e, span: 0.1 ** (e // max(1, span // 3))),
    "cosine": (_cosine_native, lambda e, span: 0.5 * (1 + math.cos(math.pi * min(e, span) / span))),
}


def _schedule(kind: str) -> tuple[Native | None, ClosedForm]:
    if kind not in SCHEDULES:
        raise ConfigError(f"train.scheduler: unknown schedule {kind!r} ({', '.join(SCHEDULES)})")
    return SCHEDULES[kind]


def param_groups(model: nn.Module, train: TrainConfig | Mapping[str, Any]) -> list[dict[str, Any]]:
    """Optimizer parameter groups: the head at ``train.lr``, the backbone at ``lr * scale``.

    ``train.backbone_lr_scale`` 1.0 (off) gives one group of all parameters, exactly the
    optimizer without fine-tuning. Otherwise two groups, the head first (so
    ``param_groups[0]["lr"]`` is the schedule of ``train.lr`` the history logs). The groups are
    a function of the config, so a resumed run's optimizer matches its checkpoint; frozen
    parameters stay in their group (no gradient, no update).
    """
    train = TrainConfig.of(train)
    scale, lr = float(train.backbone_lr_scale), float(train.lr)
    if scale == 1.0:
        return [{"params": list(model.parameters()), "lr": lr}]
    backbone, head = split_parameters(model)
    return [
        {"params": head, "lr": lr, "name": "head"},
        {"params": backbone, "lr": lr * scale, "name": "backbone"},
    ]


def make_optimizer(model: nn.Module, train: TrainConfig) -> Optimizer:
    """AdamW over :func:`param_groups` with ``train.weight_decay``."""
    groups = param_groups(model, train)
    return torch.optim.AdamW(groups, lr=train.lr, weight_decay=train.weight_decay)


def lr_factor(train: TrainConfig | Mapping[str, Any], epoch_index: int) -> float:
    """Multiplier of the peak LR in epoch ``epoch_index + 1`` (0-based, as LambdaLR counts).

    Linear warm-up over ``train.warmup_epochs`` W: epoch k (1..W) trains at ``k / (W + 1)`` of
    the peak; then the ``train.scheduler`` schedule runs over the remaining epochs: ``none``
    (1), ``step`` (x0.1 every third of them) or ``cosine`` (to 0 after the last epoch).
    """
    train = TrainConfig.of(train)
    w = int(train.warmup_epochs)
    if epoch_index < w:
        return (epoch_index + 1) / (w + 1)
    _, closed_form = _schedule(train.scheduler)
    return closed_form(epoch_index - w, max(1, int(train.epochs) - w))


def make_scheduler(optimizer: Optimizer, train: TrainConfig | Mapping[str, Any]) -> Any:
    """Per-epoch LR schedule of ``train.scheduler`` (None for ``none`` without warm-up).

    Without warm-up torch's own scheduler (:data:`SCHEDULES`); with ``train.warmup_epochs`` > 0
    a ``LambdaLR`` of :func:`lr_factor`: linear warm-up, then the schedule over the remaining
    epochs. Each parameter group keeps its own peak (the backbone's is ``lr * scale``).
    """
    train = TrainConfig.of(train)
    native, _ = _schedule(train.scheduler)
    if train.warmup_epochs:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: lr_factor(train, e))
    return native(optimizer, int(train.epochs)) if native is not None else None
