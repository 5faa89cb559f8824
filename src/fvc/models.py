"""Model registry: ``build_model(model_cfg)`` for every architecture the workflow can train.

Every model maps a float clip batch ``(B, C, T, H, W)`` (normalised by
:func:`fvc.datasets.to_model_input`) to **two logits** ``(B, 2)``: index 1 is the positive class
(``fake``), so ``softmax(logits)[:, 1]`` is ``prob_fake`` and the loss is a (class-weighted)
cross-entropy.

Nothing is ever downloaded: torchvision models are built with ``weights=None`` and optionally
initialised from a local state-dict file (``model.weights``). A classifier head whose shape does
not fit two classes (e.g. Kinetics-400 weights) is skipped with a log line; any other mismatch is
an error, so a wrong weights file cannot silently train from scratch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models import video as tv_video

log = logging.getLogger(__name__)

NUM_CLASSES = 2


class Small3D(nn.Module):
    """CPU-sized 3D CNN (~71k parameters): three Conv3d-BN-ReLU blocks (16, 32, 64 channels).

    The first pooling keeps time (clips are short), the second halves it; global average pooling
    makes the network independent of clip size, so any ``data.num_frames``/``data.size`` works.
    """

    def __init__(self, dropout: float = 0.2, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()

        def block(c_in: int, c_out: int) -> list[nn.Module]:
            return [
                nn.Conv3d(c_in, c_out, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm3d(c_out),
                nn.ReLU(inplace=True),
            ]

        self.features = nn.Sequential(
            *block(3, 16),
            nn.MaxPool3d(kernel_size=(1, 2, 2), ceil_mode=True),
            *block(16, 32),
            nn.MaxPool3d(kernel_size=2, ceil_mode=True),
            *block(32, 64),
            nn.AdaptiveAvgPool3d(1),
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(torch.flatten(self.features(x), 1)))


def _small3d(cfg: dict[str, Any]) -> nn.Module:
    return Small3D(dropout=float(cfg.get("dropout", 0.2)))


def _resnet3d(factory: Callable[..., nn.Module]) -> Callable[[dict[str, Any]], nn.Module]:
    def build(cfg: dict[str, Any]) -> nn.Module:
        model = factory(weights=None)
        model.fc = nn.Sequential(  # type: ignore[assignment]
            nn.Dropout(float(cfg.get("dropout", 0.2))),
            nn.Linear(model.fc.in_features, NUM_CLASSES),
        )
        return model

    return build


def _s3d(cfg: dict[str, Any]) -> nn.Module:
    model = tv_video.s3d(
        weights=None, num_classes=NUM_CLASSES, dropout=float(cfg.get("dropout", 0.2))
    )
    # torchvision's fixed (2, 7, 7) pool only fits 16+ frames of 224 px; adaptive pooling has no
    # weights, so pretrained files still load and any clip size works.
    model.avgpool = nn.AdaptiveAvgPool3d(1)
    return model


#: name -> (builder, prefix of the classifier head's parameters)
REGISTRY: dict[str, tuple[Callable[[dict[str, Any]], nn.Module], str]] = {
    "small3d": (_small3d, "head."),
    "r3d_18": (_resnet3d(tv_video.r3d_18), "fc."),
    "mc3_18": (_resnet3d(tv_video.mc3_18), "fc."),
    "r2plus1d_18": (_resnet3d(tv_video.r2plus1d_18), "fc."),
    "s3d": (_s3d, "classifier."),
}


def build_model(model_cfg: dict[str, Any]) -> nn.Module:
    """Build ``model_cfg["name"]`` with a two-logit head; load ``model_cfg["weights"]`` if set."""
    name = model_cfg.get("name", "small3d")
    if name not in REGISTRY:
        raise ValueError(f"model.name: unknown model {name!r}; valid names: {', '.join(REGISTRY)}")
    builder, head_prefix = REGISTRY[name]
    model = builder(model_cfg)
    weights = model_cfg.get("weights")
    if weights:
        load_weights(model, weights, head_prefix)
    return model


def _head_key(key: str, head_prefix: str) -> bool:
    # the resnets' head is wrapped as fc.1 here but is plain ``fc`` in torchvision's files
    return key.startswith(head_prefix) or key.split(".")[0] == head_prefix.rstrip(".")


def load_weights(model: nn.Module, path: str | Path, head_prefix: str) -> None:
    """Initialise ``model`` from a local state dict (or a ``best_model.pt`` of this workflow).

    Head tensors that do not fit (another number of classes) are left freshly initialised; a
    missing file, a non-state-dict file or any other missing/mismatched tensor is an error.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"model.weights: file {path} does not exist (nothing is downloaded; give a local "
            "state-dict file or set model.weights: null)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"model.weights: cannot load {path}: {exc}") from exc
    if isinstance(state, dict) and "model_state" in state:
        state = state["model_state"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"model.weights: {path} is not a state dict (name -> tensor)")
    own = model.state_dict()
    # torchvision files name the resnet head fc.weight; ours is fc.1.weight (dropout at fc.0)
    renamed = {}
    for key, value in state.items():
        alt = f"{head_prefix}1.{key[len(head_prefix) :]}"
        if key not in own and key.startswith(head_prefix) and alt in own:
            key = alt
        renamed[key] = value
    usable, skipped = {}, []
    for key, value in renamed.items():
        if key in own and own[key].shape == value.shape:
            usable[key] = value
        elif _head_key(key, head_prefix):
            skipped.append(key)
        elif key in own:
            raise ValueError(
                f"model.weights: {path}: tensor {key} has shape {tuple(value.shape)}, "
                f"the model expects {tuple(own[key].shape)} (wrong model.name?)"
            )
        else:
            raise ValueError(f"model.weights: {path}: unexpected tensor {key} (wrong model.name?)")
    missing = [k for k in own if k not in usable and not _head_key(k, head_prefix)]
    if missing:
        raise ValueError(
            f"model.weights: {path} lacks {len(missing)} tensors, e.g. {missing[:3]} "
            "(wrong model.name?)"
        )
    model.load_state_dict(usable, strict=False)
    log.info(
        "loaded %d tensors from %s%s",
        len(usable),
        path,
        f"; classifier head re-initialised ({', '.join(skipped)})" if skipped else "",
    )


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (logged at start so model size is visible in the log)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
