"""Tiny synthetic upstream artifacts for tests and benchmarks (no videos, no PyAV).

:func:`write_synthetic_inputs` writes what the train rule reads (docs/artifacts.md formats):
``data/clips.npy`` + ``clips.parquet``, ``splits.parquet`` and each fold's augment output, with
a learnable signal. Used by tests/unit, tests/faults and bench/ (including ``gpu_check.py``,
which must run on a stock PyTorch image).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fvc.io import atomic_path, write_parquet


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, arr, allow_pickle=False)


def write_synthetic_inputs(
    root: str | os.PathLike[str],
    n_videos: int = 24,
    frames: int = 4,
    size: int = 16,
    n_folds: int = 2,
    aug_copies: int = 1,
    seed: int = 0,
    clips_per_video: int = 1,
) -> dict[str, Any]:
    """Write tiny upstream artifacts (docs/artifacts.md formats) with a learnable signal.

    Fake clips (label 1) carry a bright square whose position moves between frames; real clips
    are smooth noise. With ``clips_per_video`` C > 1, clips.npy is ``(N, C, T, S, S, 3)`` (C
    windows per video, each drawn like a clip) and the augmented copies come from window 0.
    Used by tests and ``bench/``; returns the paths per fold.
    """
    root = Path(root)
    (root / "data").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    labels = np.arange(n_videos) % 2
    c = int(clips_per_video)
    shape = (n_videos, frames, size, size, 3) if c == 1 else (n_videos, c, frames, size, size, 3)
    clips = rng.integers(40, 140, size=shape, dtype=np.uint8)
    windows = clips[:, None] if c == 1 else clips  # a view: (N, C, T, S, S, 3)
    q = max(2, size // 4)
    for i in np.flatnonzero(labels):
        for w in range(c):
            for t in range(frames):
                y0, x0 = rng.integers(0, size - q, size=2)
                windows[i, w, t, y0 : y0 + q, x0 : x0 + q] = 230
    _save_npy(root / "data" / "clips.npy", clips)
    ids = [f"v{i + 1:05d}" for i in range(n_videos)]
    meta = pd.DataFrame(
        {
            "video_id": ids,
            "path": [str(root / f"{v}.mp4") for v in ids],
            "label": labels.astype(np.int8),
            "group": ids,
        }
    )
    write_parquet(
        root / "data" / "clips.parquet", meta.assign(clip_row=np.arange(n_videos), padded=False)
    )
    folds = np.empty(n_videos, dtype=np.int64)
    for c in (0, 1):  # stratified round robin
        members = np.flatnonzero(labels == c)
        folds[members] = np.arange(len(members)) % n_folds
    splits = meta.assign(clip_row=np.arange(n_videos), fold=folds)
    write_parquet(root / "splits.parquet", splits)
    out: dict[str, Any] = {
        "clips": str(root / "data" / "clips.npy"),
        "index": str(root / "data" / "clips.parquet"),
        "splits": str(root / "splits.parquet"),
        "folds": {},
    }
    for k in range(n_folds):
        d = root / f"fold_{k}" / "augment"
        d.mkdir(parents=True, exist_ok=True)
        tr = splits[splits["fold"] != k]
        rows = np.repeat(tr["clip_row"].to_numpy(), aug_copies)
        first = windows[:, 0]  # augmented copies hold one window (fvc.augment)
        aug = first[rows][:, :, :, ::-1] if len(rows) else np.zeros((0, *first.shape[1:]), "u1")
        _save_npy(d / "clips.npy", np.ascontiguousarray(aug))
        man = pd.DataFrame(
            {
                "aug_row": np.arange(len(rows), dtype=np.int64),
                "video_id": np.repeat(tr["video_id"].to_numpy(), aug_copies),
                "clip_row": rows,
                "copy": np.tile(np.arange(aug_copies), len(tr)),
                "window": np.zeros(len(rows), dtype=np.int64),
                "label": np.repeat(tr["label"].to_numpy(), aug_copies),
                "ops": "flip",
            }
        )
        write_parquet(d / "manifest.parquet", man)
        out["folds"][k] = {
            "aug_clips": str(d / "clips.npy"),
            "aug_manifest": str(d / "manifest.parquet"),
        }
    return out


def fold_inputs(inputs: dict[str, Any], fold: int = 0) -> Any:
    """The :class:`fvc.datasets.FoldInputs` of ``fold`` of :func:`write_synthetic_inputs`."""
    from fvc.datasets import FoldInputs

    return FoldInputs(inputs["clips"], inputs["index"], inputs["splits"], **inputs["folds"][fold])


def fit_synthetic(
    inputs: dict[str, Any] | Any,
    root: str | os.PathLike[str],
    model: dict[str, Any] | None,
    train: dict[str, Any] | None,
    memory: dict[str, Any] | None = None,
    fold: int = 0,
    **kwargs: Any,
) -> dict[str, Any]:
    """``fvc.train.fit_fold`` on one fold (the written inputs, or a FoldInputs), one thread:
    outputs in ``root/out``, checkpoints in ``root/ck``; ``kwargs`` go to fit_fold."""
    from fvc.train import FoldOutputs, FoldTarget, fit_fold

    root = Path(root)
    files = fold_inputs(inputs, fold) if isinstance(inputs, dict) else inputs
    target = FoldTarget(fold, FoldOutputs.in_dir(root / "out"))
    return fit_fold(target, files, model, train, memory, root / "ck", threads=1, **kwargs)
