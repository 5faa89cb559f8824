"""Offline, per-fold augmentation of the training videos.

For fold ``k`` every training video (``splits.parquet`` rows with ``fold != k``) gets
``augment.copies`` augmented versions, written once to ``fold_<k>/augment/clips.npy`` so training
reads them like the original clips. Validation videos of the fold are never read.

Why the design looks the way it does:

- **Reproducible bytes.** Each copy is a pure function of ``(augment.seed, fold, video_id, copy)``:
  a seed is derived with SHA-256 (Python's ``hash()`` is salted per process) and every random
  draw comes from a local :class:`torch.Generator`. The global torch RNG is never used, so the
  result depends neither on the order of the rows nor on what ran before.
- **One draw per clip.** Parameters are drawn once and applied to all frames through
  ``torchvision.transforms.v2.functional`` on a ``tv_tensors.Video`` (T, C, H, W), so a copy
  looks like the same video filmed slightly differently.
- **Moderate ops.** The demo set's "fake" artefact is a pasted, flickering patch: no op smooths
  over time, colour changes hit all frames alike (frame-to-frame differences survive) and the
  erased box is small.
- **One window per copy.** With ``data.clips_per_video`` C > 1 (clips.npy ``(N, C, T, S, S, 3)``)
  each copy augments ONE window of its video, :func:`copy_window`: copies of a video take
  successive windows from a start drawn from ``(seed, fold, video_id)``, so ``copies`` >= C
  covers every window. The output stays ``(M, T, S, S, 3)`` (M = n_train * copies, not ×C):
  the original video still shows a new window each epoch, and the disk cost does not grow
  with C. The manifest's ``window`` column says which window a copy came from.
- **Flat memory, atomic output.** Clips are read from a memory map and written one by one into
  an ``np.lib.format.open_memmap`` temp file that is renamed only when complete.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from fvc.config import AugmentConfig
from fvc.io import atomic_path, write_parquet

log = logging.getLogger(__name__)

#: Spatial ops in the order they are applied; temporal ops are applied last.
SPATIAL_OPS = ("flip", "affine", "color", "blur", "noise", "erase")
ALL_OPS = (*SPATIAL_OPS, "temporal")
MANIFEST_COLUMNS = ("aug_row", "video_id", "clip_row", "copy", "window", "label", "ops")
_SPLITS_COLUMNS = ("video_id", "clip_row", "label", "fold")

# Ranges of the random parameters: small on purpose (see the module docstring).
MAX_ROTATION_DEG = 10.0
MAX_TRANSLATE_FRAC = 0.06
SCALE_RANGE = (0.92, 1.08)
JITTER = {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.03}
BLUR_SIGMA = (0.3, 1.0)
NOISE_SIGMA = (0.01, 0.04)  # on the [0, 1] scale
ERASE_AREA = (0.005, 0.03)  # fraction of the frame
ERASE_ASPECT = (0.5, 2.0)


def derive_seed(seed: int, fold: int | None, video_id: str, copy: int) -> int:
    """Seed of one copy: SHA-256 of the tuple, stable across processes, machines and orders."""
    stream = "final" if fold is None else int(fold)  # fold None: the final model's copies
    key = f"fvc-augment\x1f{int(seed)}\x1f{stream}\x1f{video_id}\x1f{int(copy)}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") & (2**63 - 1)


def copy_window(seed: int, fold: int | None, video_id: str, copy: int, n_windows: int) -> int:
    """The window (0..n_windows-1) that copy ``copy`` of a video augments.

    ``(start + copy) % n_windows`` with ``start`` from SHA-256 of ``(seed, fold, video_id)``:
    copies of one video take distinct windows while there are enough. Always 0 for one window
    (no draw, so the copies are those of a single-window cache).
    """
    if n_windows <= 1:
        return 0
    stream = "final" if fold is None else int(fold)  # fold None: the final model's copies
    key = f"fvc-augment-window\x1f{int(seed)}\x1f{stream}\x1f{video_id}".encode()
    start = int.from_bytes(hashlib.sha256(key).digest()[:8], "little")
    return (start + int(copy)) % int(n_windows)


def _uniform(gen: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=gen, dtype=torch.float64))


def _randint(gen: torch.Generator, low: int, high: int) -> int:
    """Integer in [low, high] (inclusive)."""
    return int(torch.randint(low, high + 1, (), generator=gen))


def _choose_ops(cfg: AugmentConfig, gen: torch.Generator) -> list[str]:
    """Draw which ops fire; a copy where none fired gets one, drawn with weights p.

    Forcing one op keeps every copy different from its source (a copy identical to the source
    would only cost disk and epoch time) unless all probabilities are 0.
    """
    draws = torch.rand(len(ALL_OPS), generator=gen, dtype=torch.float64).tolist()
    chosen = [op for op, u in zip(ALL_OPS, draws, strict=True) if u < cfg.prob(op)]
    weights = torch.tensor([cfg.prob(op) for op in ALL_OPS], dtype=torch.float64)
    if not chosen and float(weights.sum()) > 0:
        chosen = [ALL_OPS[int(torch.multinomial(weights, 1, generator=gen))]]
    return chosen


def _affine(video: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    height, width = video.shape[-2:]
    angle = _uniform(gen, -MAX_ROTATION_DEG, MAX_ROTATION_DEG)
    tx = round(_uniform(gen, -MAX_TRANSLATE_FRAC, MAX_TRANSLATE_FRAC) * width)
    ty = round(_uniform(gen, -MAX_TRANSLATE_FRAC, MAX_TRANSLATE_FRAC) * height)
    scale = _uniform(gen, *SCALE_RANGE)
    return F.affine(
        video,
        angle=angle,
        translate=[tx, ty],
        scale=scale,
        shear=[0.0, 0.0],
        interpolation=F.InterpolationMode.BILINEAR,
        fill=[0.0],
    )


def _color(video: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """ColorJitter with one factor set for the whole clip, applied in a random order."""
    factors = {
        "brightness": _uniform(gen, 1 - JITTER["brightness"], 1 + JITTER["brightness"]),
        "contrast": _uniform(gen, 1 - JITTER["contrast"], 1 + JITTER["contrast"]),
        "saturation": _uniform(gen, 1 - JITTER["saturation"], 1 + JITTER["saturation"]),
        "hue": _uniform(gen, -JITTER["hue"], JITTER["hue"]),
    }
    adjust = {
        "brightness": F.adjust_brightness,
        "contrast": F.adjust_contrast,
        "saturation": F.adjust_saturation,
        "hue": F.adjust_hue,
    }
    names = list(factors)
    for idx in torch.randperm(len(names), generator=gen).tolist():
        video = adjust[names[idx]](video, factors[names[idx]])
    return video


def _blur(video: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    sigma = _uniform(gen, *BLUR_SIGMA)
    kernel = 3 if sigma < 0.6 else 5
    return F.gaussian_blur(video, kernel_size=[kernel, kernel], sigma=[sigma, sigma])


def _noise(video: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Gaussian noise on float [0, 1], back to uint8 (noise drawn from ``gen``, not global)."""
    sigma = _uniform(gen, *NOISE_SIGMA)
    as_float = F.to_dtype(video, torch.float32, scale=True)
    noise = torch.randn(as_float.shape, generator=gen, dtype=torch.float32) * sigma
    noisy = tv_tensors.wrap((as_float + noise).clamp_(0.0, 1.0), like=video)
    return F.to_dtype(noisy, torch.uint8, scale=True)


def _erase(video: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """RandomErasing-like: one small box (0.5-3 % of the frame), same place in every frame."""
    height, width = video.shape[-2:]
    area = _uniform(gen, *ERASE_AREA) * height * width
    aspect = math.exp(_uniform(gen, math.log(ERASE_ASPECT[0]), math.log(ERASE_ASPECT[1])))
    h = max(1, min(height, round(math.sqrt(area * aspect))))
    w = max(1, min(width, round(math.sqrt(area / aspect))))
    i = _randint(gen, 0, height - h)
    j = _randint(gen, 0, width - w)
    value = torch.tensor(_randint(gen, 0, 255), dtype=video.dtype)
    return F.erase(video, i, j, h, w, value)


def _temporal(video: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, str]:
    """Frame drop, frame duplication or reversal; T is kept and nothing is averaged over time."""
    t = video.shape[0]
    if t < 2:
        return video, "temporal:none"
    kind = ("drop", "dup", "reverse")[_randint(gen, 0, 2)]
    if kind == "reverse":
        index = list(range(t - 1, -1, -1))
        return video[index], "reverse"
    at = _randint(gen, 0, t - 1 if kind == "drop" else t - 2)  # dup of the last = no-op
    if kind == "drop":
        kept = [k for k in range(t) if k != at]
        # Re-sample the T-1 kept frames back to T (nearest): one neighbour is shown twice.
        pick = np.rint(np.linspace(0, t - 2, t)).astype(int)
        index = [kept[p] for p in pick]
    else:  # dup: frame `at` is shown twice, the last frame falls off.
        index = [*range(at + 1), at, *range(at + 1, t)][:t]
    return video[index], f"{kind}{at}"


def augment_clip(clip: np.ndarray, cfg: AugmentConfig, seed: int) -> tuple[np.ndarray, str]:
    """Return one augmented copy of ``clip`` (T, S, S, 3) uint8 and the applied ops.

    ``ops`` is a short ``+``-joined string such as ``"flip+color+drop3"`` (``"none"`` when all
    probabilities are 0). Only a local generator seeded with ``seed`` is used.
    """
    if clip.dtype != np.uint8 or clip.ndim != 4 or clip.shape[-1] != 3:
        raise ValueError(f"expected a uint8 clip (T, H, W, 3), got {clip.dtype} {clip.shape}")
    gen = torch.Generator(device="cpu").manual_seed(seed)
    chosen = _choose_ops(cfg, gen)
    # A private copy: the caller's array (often a read-only memory map) is never touched.
    video = tv_tensors.Video(torch.from_numpy(np.array(clip, copy=True)).permute(0, 3, 1, 2))
    spatial = {
        "flip": lambda v, g: F.horizontal_flip(v),
        "affine": _affine,
        "color": _color,
        "blur": _blur,
        "noise": _noise,
        "erase": _erase,
    }
    applied: list[str] = []
    for op in SPATIAL_OPS:
        if op in chosen:
            video = spatial[op](video, gen)
            applied.append(op)
    if "temporal" in chosen:
        video, name = _temporal(video, gen)
        applied.append(name)
    out = video.permute(0, 2, 3, 1).contiguous().numpy()
    if out.shape != clip.shape or out.dtype != np.uint8:
        raise RuntimeError(f"augmentation changed the clip to {out.dtype} {out.shape} ({applied})")
    return out, "+".join(applied) or "none"


def _train_rows(splits_path: Path, fold: int | None, n_clips: int) -> pd.DataFrame:
    """Training rows of ``fold`` sorted by video_id (so the output ignores the row order);
    ``fold=None``: every row (the final model's training set, :mod:`fvc.refit`)."""
    splits = pd.read_parquet(splits_path)
    missing = [c for c in _SPLITS_COLUMNS if c not in splits.columns]
    if missing:
        raise ValueError(f"{splits_path}: missing column(s) {missing}")
    folds = sorted(int(f) for f in pd.unique(splits["fold"]))
    bad_fold = isinstance(fold, bool) or not isinstance(fold, int | np.integer) or fold not in folds
    if fold is not None and bad_fold:
        raise ValueError(f"{splits_path}: fold {fold!r} does not exist; folds present: {folds}")
    dup = splits["video_id"][splits["video_id"].duplicated()]
    if len(dup):
        raise ValueError(f"{splits_path}: duplicated video_id {dup.iloc[0]!r}")
    train = splits if fold is None else splits[splits["fold"] != fold]
    train = train.sort_values("video_id", kind="stable")
    bad = train[(train["clip_row"] < 0) | (train["clip_row"] >= n_clips)]
    if len(bad):
        row = bad.iloc[0]
        raise ValueError(
            f"{splits_path}: video {row['video_id']!r} has clip_row {row['clip_row']} outside "
            f"the {n_clips} clips of clips.npy"
        )
    return train.reset_index(drop=True)


def _manifest(records: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame.from_records(records, columns=list(MANIFEST_COLUMNS))
    dtypes = {
        "aug_row": "int64",
        "clip_row": "int64",
        "copy": "int64",
        "window": "int64",
        "label": "int64",
    }
    return df.astype({**dtypes, "video_id": str, "ops": str})


def augment_fold(
    clips_path: str | os.PathLike[str],
    splits_path: str | os.PathLike[str],
    fold: int | None,
    out_clips: str | os.PathLike[str],
    out_manifest: str | os.PathLike[str],
    augment_cfg: Mapping[str, Any],
    threads: int | None = None,
) -> pd.DataFrame:
    """Write ``copies`` augmented versions of fold ``fold``'s training videos; return the manifest.

    ``fold=None``: of every video (the final model's training set, :mod:`fvc.refit`).

    ``out_clips`` is uint8 (M, T, S, S, 3) with M = n_train * copies (0 is fine) in manifest
    order: video_id ascending, then copy. ``clips_path`` is ``(N, T, S, S, 3)`` or, with C
    windows per video, ``(N, C, T, S, S, 3)``: each copy then augments one window
    (:func:`copy_window`). All inputs are checked before any output is opened;
    on any error neither output is created and no temp file is left. ``threads`` caps torch's
    intra-op threads (the rule's ``threads``).
    """
    cfg = AugmentConfig.of(augment_cfg)
    clips_path, splits_path = Path(clips_path), Path(splits_path)
    if threads is not None:
        torch.set_num_threads(max(1, int(threads)))
    clips = np.load(clips_path, mmap_mode="r", allow_pickle=False)
    if clips.dtype != np.uint8 or clips.ndim not in (5, 6) or clips.shape[-1] != 3:
        raise ValueError(
            f"{clips_path}: expected uint8 (N, T, S, S, 3) or (N, C, T, S, S, 3), got "
            f"{clips.dtype} {clips.shape}"
        )
    n_windows = clips.shape[1] if clips.ndim == 6 else 1
    window_shape = clips.shape[-4:]
    train = _train_rows(splits_path, fold, clips.shape[0])
    n_out = len(train) * cfg.copies
    log.info(
        "fold %s: %d training videos x %d copies = %d clips (validation videos untouched)",
        fold,
        len(train),
        cfg.copies,
        n_out,
    )
    records: list[dict[str, Any]] = []
    op_counts: Counter[str] = Counter()
    with atomic_path(out_clips, suffix=".npy") as tmp:
        out = np.lib.format.open_memmap(
            tmp, mode="w+", dtype=np.uint8, shape=(n_out, *window_shape)
        )
        for n_done, row in enumerate(train.itertuples(index=False)):
            if n_done and n_done % 100 == 0:
                log.info("fold %s: %d / %d videos augmented", fold, n_done, len(train))
            entry = clips[int(row.clip_row)]  # (T, S, S, 3) or (C, T, S, S, 3)
            for copy in range(cfg.copies):
                window = copy_window(cfg.seed, fold, str(row.video_id), copy, n_windows)
                source = np.array(entry if clips.ndim == 5 else entry[window])
                seed = derive_seed(cfg.seed, fold, str(row.video_id), copy)
                aug, ops = augment_clip(source, cfg, seed)
                aug_row = len(records)
                out[aug_row] = aug
                records.append(
                    {
                        "aug_row": aug_row,
                        "video_id": str(row.video_id),
                        "clip_row": int(row.clip_row),
                        "copy": copy,
                        "window": window,
                        "label": int(row.label),
                        "ops": ops,
                    }
                )
                op_counts.update(ops.split("+"))
        out.flush()
        del out
        manifest = _manifest(records)
        write_parquet(out_manifest, manifest)
    log.info(
        "fold %s: wrote %s and %s; ops: %s",
        fold,
        out_clips,
        out_manifest,
        dict(sorted(op_counts.items())),
    )
    return manifest
