"""Training of one model: a cross-validation fold or the final model (a *target*).

One idea per module:

- :mod:`~fvc.train.loop`: ``train_one_epoch``, ``evaluate``, ``fit_fold`` and ``run_fold`` (the
  job's exit status), in the shape of torchvision's reference scripts;
- :mod:`~fvc.train.step`: one optimizer step (forward/backward, update, rollback) and the ONE
  OOM policy (retry, halve, skip) that training, evaluation and prediction share;
- :mod:`~fvc.train.precision`: resolving ``train.precision``, autocast, the GradScaler;
- :mod:`~fvc.train.optim`: AdamW, parameter groups and the LR schedule;
- :mod:`~fvc.train.state`: ``Run``, ``Position`` and the one checkpoint dict;
- :mod:`~fvc.train.resume`: checkpoint files, the fingerprint, the resume decision, the
  background writer;
- :mod:`~fvc.train.stop`: signals and the time budget (a deliberate, resumable stop);
- :mod:`~fvc.train.publish`: the targets (a fold, the final model), epoch bookkeeping and the
  declared outputs.

Garbage collection and the memory log are :mod:`fvc.memory`; devices :mod:`fvc.devices`.
"""

from fvc.datasets import FoldInputs
from fvc.train.loop import (
    TrainingFailed,
    evaluate,
    fit_fold,
    rule_arguments,
    run_fold,
    train_one_epoch,
)
from fvc.train.publish import FinalOutputs, FinalTarget, FoldOutputs, FoldTarget, Target
from fvc.train.stop import EXIT_RESUMABLE, TrainingInterrupted

__all__ = [
    "EXIT_RESUMABLE",
    "FinalOutputs",
    "FinalTarget",
    "FoldInputs",
    "FoldOutputs",
    "FoldTarget",
    "Target",
    "TrainingFailed",
    "TrainingInterrupted",
    "evaluate",
    "fit_fold",
    "rule_arguments",
    "run_fold",
    "train_one_epoch",
]
