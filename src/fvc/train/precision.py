"""Mixed precision: which precision a device runs, the autocast context and the GradScaler.

``train.precision`` is ``off``, ``bf16``, ``fp16`` or ``auto``. fp16 needs a GradScaler (its
range is small enough for gradients to underflow); bf16 has float32's range and needs none.
The scaler is made on the CPU too, so CI exercises the fp16 path (torch 2.14's CPU autocast runs
Conv3d in fp16 and ``torch.amp.GradScaler("cpu")`` scales, unscales and skips inf steps).
"""

from __future__ import annotations

import contextlib

import torch

from fvc.config import ConfigError

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(precision: str, device: torch.device) -> str:
    """``train.precision`` for ``device``: ``auto`` is bf16 where the GPU supports it, else fp16,
    and bf16 on the CPU; bf16 asked for on a GPU without it is an error naming the key."""
    cuda = device.type == "cuda"
    if precision == "auto":
        return "bf16" if not cuda or torch.cuda.is_bf16_supported() else "fp16"
    if precision == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        name = torch.cuda.get_device_name(device)
        raise ConfigError(f"train.precision: bf16 is not supported by {name}; use fp16 or auto")
    return precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Autocast to bf16 or fp16 for ``precision`` (resolved, not ``auto``); ``off``: nothing."""
    dtype = AUTOCAST_DTYPES.get(precision, torch.float32)
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=precision != "off")


def make_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A GradScaler for fp16 (on CUDA and on the CPU); None for bf16 and off."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None
