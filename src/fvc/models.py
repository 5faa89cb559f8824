"""Model registry: ``build_model(model_cfg)`` for every architecture the workflow can train.

Every model maps a float clip batch ``(B, C, T, H, W)`` (normalised by
:func:`fvc.datasets.to_model_input`) to **two logits** ``(B, 2)``: index 1 is the positive class
(``fake``), so ``softmax(logits)[:, 1]`` is ``prob_fake`` and the loss is a (class-weighted)
cross-entropy.

``model.weights`` is either a torchvision weight name of the chosen architecture
(``KINETICS400_V1``, ``DEFAULT``, or the full ``R3D_18_Weights.KINETICS400_V1``), fetched by
torchvision's own code into its cache (``torch.hub.get_dir()/checkpoints``, i.e. ``TORCH_HOME``)
on first use, or a local state-dict file. Where the fetch cannot happen (an offline node)
:func:`fetch_weights` raises :class:`WeightsUnavailable`, one line naming the URL and the exact
file to place there. A classifier head whose shape does not fit two classes (Kinetics-400
weights) is re-initialised with a log line; any other mismatch is an error, so a wrong weights
file cannot silently train from scratch. With torchvision weights the input normalisation is the
weights' own (:func:`input_normalization`).

Fine-tuning: the backbone is every parameter outside the classifier head (whose parameter prefix
:data:`REGISTRY` names, once per architecture): :func:`split_parameters` (the optimizer's two
groups, :func:`fvc.train.optim.param_groups`) and :func:`set_backbone_frozen` /
:func:`backbone_frozen` (``train.freeze_backbone_epochs``, a function of the epoch, so a resumed
run recomputes it).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import torch
from torch import nn

from fvc.config import ModelConfig, TrainConfig, default
from fvc.datasets import MEAN, STD

if TYPE_CHECKING:
    from torchvision.models._api import WeightsEnum

log = logging.getLogger(__name__)


def _tv_video() -> ModuleType:
    """``torchvision.models.video``, imported on first use: a ``small3d`` job has no use for
    torchvision. (It saves a train job little: AdamW imports ``torch._dynamo`` on its first use,
    most of what importing torchvision costs; see ``bench/job_startup.py``.)"""
    from torchvision.models import video

    return video


NUM_CLASSES = 2

#: Seconds a weights download may wait for the server (urllib has no timeout of its own).
DOWNLOAD_TIMEOUT_S = 60


class WeightsError(ValueError):
    """``model.weights`` cannot be used; the message is one line naming the key and the file."""


class WeightsFileMissing(WeightsError, FileNotFoundError):
    """``model.weights`` names a local file that does not exist."""


class WeightsUnavailable(WeightsError):
    """torchvision weights are not in the cache and cannot be downloaded (offline node)."""


class Small3D(nn.Module):
    """CPU-sized 3D CNN (~71k parameters): three Conv3d-BN-ReLU blocks (16, 32, 64 channels).

    The first pooling keeps time (clips are short), the second halves it; global average pooling
    makes the network independent of clip size, so any ``data.num_frames``/``data.size`` works.
    """

    def __init__(
        self, dropout: float = default("model", "dropout"), num_classes: int = NUM_CLASSES
    ) -> None:
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


def _small3d(cfg: ModelConfig) -> nn.Module:
    return Small3D(dropout=float(cfg.dropout))


def _resnet3d(name: str) -> Callable[[ModelConfig], nn.Module]:
    def build(cfg: ModelConfig) -> nn.Module:
        model = getattr(_tv_video(), name)(weights=None)
        model.fc = nn.Sequential(  # type: ignore[assignment]
            nn.Dropout(float(cfg.dropout)),
            nn.Linear(model.fc.in_features, NUM_CLASSES),
        )
        return model

    return build


def _s3d(cfg: ModelConfig) -> nn.Module:
    model = _tv_video().s3d(weights=None, num_classes=NUM_CLASSES, dropout=float(cfg.dropout))
    # torchvision's fixed (2, 7, 7) pool only fits 16+ frames of 224 px; adaptive pooling has no
    # weights, so pretrained files still load and any clip size works.
    model.avgpool = nn.AdaptiveAvgPool3d(1)
    return model


#: name -> (builder, prefix of the classifier head's parameters)
REGISTRY: dict[str, tuple[Callable[[ModelConfig], nn.Module], str]] = {
    "small3d": (_small3d, "head."),
    "r3d_18": (_resnet3d("r3d_18"), "fc."),
    "mc3_18": (_resnet3d("mc3_18"), "fc."),
    "r2plus1d_18": (_resnet3d("r2plus1d_18"), "fc."),
    "s3d": (_s3d, "classifier."),
}


#: Attribute of a built model that holds its head's parameter prefix (from :data:`REGISTRY`).
HEAD_PREFIX_ATTR = "fvc_head_prefix"


def build_model(model_cfg: ModelConfig | dict[str, Any], progress: bool = True) -> nn.Module:
    """Build ``model.name`` with a two-logit head; load ``model.weights`` if set.

    torchvision weight names go through torchvision's own loader (``weights.get_state_dict``:
    the cached file, else a download, with a ``progress`` bar on stderr).
    """
    model_cfg = ModelConfig.of(model_cfg)
    if model_cfg.name not in REGISTRY:
        raise ValueError(
            f"model.name: unknown model {model_cfg.name!r}; valid names: {', '.join(REGISTRY)}"
        )
    builder, prefix = REGISTRY[model_cfg.name]
    model = builder(model_cfg)
    setattr(model, HEAD_PREFIX_ATTR, prefix)
    tv_weights = torchvision_weights(model_cfg)
    if tv_weights is not None:
        state = _fetch_state_dict(model_cfg, tv_weights, progress)
        _load_state(model, state, f"{tv_weights!r} ({weights_cache_path(tv_weights)})", prefix)
    elif model_cfg.weights:
        load_weights(model, model_cfg.weights, prefix)
    return model


# ----------------------------------------------------------------------------- weights


def torchvision_weights(model_cfg: ModelConfig | dict[str, Any]) -> WeightsEnum | None:
    """The torchvision weights ``model.weights`` names, or None for a path / no weights.

    A value is a name when it is a member of the architecture's weights enum
    (``torchvision.models.get_model_weights(name)``: ``KINETICS400_V1``, ``DEFAULT``) or
    ``<Enum>.<member>`` (``R3D_18_Weights.KINETICS400_V1``). A value that looks like a name
    (letters, digits and underscores, or ``<X>_Weights.<member>``), is not an existing file and
    is no such member is an error listing the valid names; anything else is a local path.
    """
    model_cfg = ModelConfig.of(model_cfg)
    if not model_cfg.weights:
        return None
    value, name = str(model_cfg.weights), model_cfg.name
    enum = None
    if name != "small3d":
        import torchvision

        try:
            enum = torchvision.models.get_model_weights(name)
        except ValueError:
            enum = None
    members = list(enum.__members__) if enum is not None else []
    member = value.removeprefix(f"{enum.__name__}.") if enum is not None else value
    if enum is not None and member in members:
        return enum[member]
    looks_like_name = (
        value.replace("_", "").isalnum() or value.split(".")[0].endswith("_Weights")
    ) and not Path(value).exists()
    if looks_like_name:
        valid = ", ".join(members) if members else "none (train it from scratch or give a path)"
        raise WeightsError(
            f"model.weights: {value!r} is neither a local file nor torchvision weights of "
            f"model.name {name!r} (valid names: {valid}; or a state-dict path)"
        )
    return None


def weights_cache_path(weights: WeightsEnum) -> Path:
    """Where torchvision keeps ``weights``: ``torch.hub.get_dir()/checkpoints/<URL file name>``.

    The same path ``torch.hub.load_state_dict_from_url`` reads and downloads to (``TORCH_HOME``,
    default ``~/.cache/torch``, decides ``get_dir()``).
    """
    name = os.path.basename(urlparse(weights.url).path)
    return Path(torch.hub.get_dir()).resolve() / "checkpoints" / name


def _fetch_state_dict(
    model_cfg: ModelConfig, weights: WeightsEnum, progress: bool
) -> dict[str, Any]:
    """torchvision's loader for ``weights`` (cache, else download), errors as one line."""
    path = weights_cache_path(weights)
    what = f"model.weights: {model_cfg.weights} ({weights!r})"
    cached = path.is_file()
    previous = socket.getdefaulttimeout()
    if previous is None:  # a silently dropped connection must not hang the job forever
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        return weights.get_state_dict(
            progress=progress, check_hash=True, map_location="cpu", weights_only=True
        )
    except Exception as exc:
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        if cached:
            raise WeightsError(
                f"{what}: cannot load the cached file {path}: {reason} (delete it to download "
                "again)"
            ) from None
        raise WeightsUnavailable(
            f"{what}: cannot download {weights.url} ({reason}); on a machine with internet "
            f"fetch that URL and place the file at {path} (TORCH_HOME decides the folder), then "
            "rerun"
        ) from None
    finally:
        socket.setdefaulttimeout(previous)


def fetch_weights(model_cfg: ModelConfig | dict[str, Any], progress: bool = True) -> Path | None:
    """The local file ``model.weights`` resolves to, downloading torchvision weights first.

    Called at the start of a job, before anything is written: a missing file or an offline node
    fails here with one line (:class:`WeightsError` / :class:`WeightsUnavailable`). None
    without weights. The path also goes into the resume fingerprint.
    """
    model_cfg = ModelConfig.of(model_cfg)
    if not model_cfg.weights:
        return None
    tv_weights = torchvision_weights(model_cfg)
    if tv_weights is None:
        path = Path(model_cfg.weights)
        if not path.is_file():
            raise WeightsFileMissing(
                f"model.weights: file {path} does not exist (give a local state-dict file, a "
                "torchvision weight name such as KINETICS400_V1, or null)"
            )
        return path
    path = weights_cache_path(tv_weights)
    if not path.is_file():
        log.info("model.weights: downloading %r from %s to %s", tv_weights, tv_weights.url, path)
        _fetch_state_dict(model_cfg, tv_weights, progress)
    return path


def input_normalization(
    model_cfg: ModelConfig | dict[str, Any],
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per RGB channel of the model input (frames scaled to 0..1).

    With torchvision weights: the weights' own transforms (``weights.transforms().mean/std``);
    otherwise the Kinetics-400 statistics :data:`fvc.datasets.MEAN` / :data:`fvc.datasets.STD`.
    """
    tv_weights = torchvision_weights(model_cfg)
    if tv_weights is None:
        return MEAN, STD
    preset = tv_weights.transforms()
    return tuple(float(v) for v in preset.mean), tuple(float(v) for v in preset.std)


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
        raise WeightsFileMissing(
            f"model.weights: file {path} does not exist (give a local state-dict file, a "
            "torchvision weight name such as KINETICS400_V1, or null)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"model.weights: cannot load {path}: {exc}") from exc
    _load_state(model, state, str(path), head_prefix)


def _load_state(model: nn.Module, state: Any, path: str, head_prefix: str) -> None:
    """Copy ``state`` into ``model`` (see :func:`load_weights`); ``path`` names the source."""
    if isinstance(state, dict) and "model_state" in state:
        state = state["model_state"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"model.weights: {path} is not a state dict (name -> tensor)")
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
            raise WeightsError(
                f"model.weights: {path}: tensor {key} has shape {tuple(value.shape)}, "
                f"the model expects {tuple(own[key].shape)} (wrong model.name?)"
            )
        else:
            raise WeightsError(
                f"model.weights: {path}: unexpected tensor {key} (wrong model.name?)"
            )
    missing = [k for k in own if k not in usable and not _head_key(k, head_prefix)]
    if missing:
        raise WeightsError(
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


# ----------------------------------------------------------------------------- fine-tuning


def head_prefix(model: nn.Module) -> str:
    """Parameter-name prefix of ``model``'s classifier head (everything else is the backbone)."""
    prefix = getattr(model, HEAD_PREFIX_ATTR, None)
    if prefix is None:
        raise ValueError(f"{type(model).__name__} was not built by fvc.models.build_model")
    return prefix


def split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(backbone, head) parameters of ``model``, each in ``named_parameters`` order."""
    prefix = head_prefix(model)
    backbone, head = [], []
    for name, p in model.named_parameters():
        (head if name.startswith(prefix) else backbone).append(p)
    return backbone, head


def backbone_frozen(train: TrainConfig | dict[str, Any], epoch: int) -> bool:
    """Whether epoch ``epoch`` (1-based) trains with a frozen backbone.

    ``train.freeze_backbone_epochs`` N: epochs 1..N train the head only.
    """
    return epoch <= int(TrainConfig.of(train).freeze_backbone_epochs)


def set_backbone_frozen(model: nn.Module, frozen: bool) -> None:
    """Freeze (``requires_grad=False``, gradients dropped) or unfreeze the backbone parameters.

    A frozen parameter gets no gradient, so AdamW neither updates nor decays it. BatchNorm
    running statistics of the backbone keep adapting in training mode (they are buffers, not
    parameters). Idempotent; call it at the start of every epoch (and after a resume).
    """
    backbone, _ = split_parameters(model)
    for p in backbone:
        p.requires_grad_(not frozen)
        if frozen:
            p.grad = None
