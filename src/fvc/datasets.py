"""Fold datasets: memory-mapped clip arrays, the epoch's batch order and model input.

Fold ``k`` trains on the ``splits.parquet`` rows with ``fold != k`` (read from ``data/clips.npy`` at
their ``clip_row``) plus every row of ``fold_<k>/augment/clips.npy``, and validates on the rows with
``fold == k`` (docs/artifacts.md). Arrays are opened with ``np.load(mmap_mode="r")``: the page cache
holds the clips, not the training process, and DataLoader workers re-open the files themselves.

Batches stay uint8 ``(B, T, H, W, C)`` until :func:`to_model_input` turns one micro-batch into the
normalised float ``(B, C, T, H, W)`` the models take, so a full effective batch costs a quarter of
the memory and only the micro-batch being computed is ever float.

The batch order of an epoch is a pure function of ``(train.seed, fold, epoch)``
(:func:`epoch_batches`), so a resumed run skips exactly the batches it had consumed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

#: Kinetics-400 statistics used by torchvision's video models (also fine for small3d).
MEAN = (0.43216, 0.394666, 0.37645)
STD = (0.22803, 0.22145, 0.216989)


def open_clips(path: str | os.PathLike[str]) -> np.ndarray:
    """Memory-map a ``(N, T, S, S, 3)`` uint8 clip array, with a one-line error if it is not one."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:
        raise ValueError(f"{path}: cannot read clip array: {exc}") from exc
    if arr.dtype != np.uint8 or arr.ndim != 5 or arr.shape[-1] != 3:
        raise ValueError(
            f"{path}: expected uint8 clips of shape (N, T, S, S, 3), got {arr.dtype} {arr.shape}"
        )
    return arr


class ClipSet(torch.utils.data.Dataset):
    """Clips drawn from one or more ``.npy`` files; item ``i`` is ``(uint8 (T,H,W,C), label)``.

    ``sources[i]`` names the file and ``rows[i]`` the row in it. Arrays are opened lazily per
    process (a memmap must not be pickled into DataLoader workers: that would copy it).
    """

    def __init__(self, files: list[str], sources: np.ndarray, rows: np.ndarray, labels: np.ndarray):
        self.files = [str(f) for f in files]
        self.sources = np.asarray(sources, dtype=np.int64)
        self.rows = np.asarray(rows, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int64)
        self._arrays: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_arrays": None}

    def _open(self) -> list[np.ndarray]:
        if self._arrays is None:
            self._arrays = [open_clips(f) for f in self.files]
        return self._arrays

    def get_batch(self, indices: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 ``(B, T, H, W, C)`` clips and int64 labels of ``indices`` (in that order)."""
        idx = np.asarray(indices, dtype=np.int64)
        arrays = self._open()
        out = np.empty((len(idx), *arrays[0].shape[1:]), dtype=np.uint8)
        for s, arr in enumerate(arrays):
            where = np.flatnonzero(self.sources[idx] == s)
            if len(where):
                out[where] = arr[self.rows[idx[where]]]
        return torch.from_numpy(out), torch.from_numpy(self.labels[idx])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x, y = self.get_batch([i])
        return x[0], int(y[0])

    # DataLoader fetches a whole batch with one call when the dataset defines __getitems__
    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.get_batch(indices)


def collate_batch(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Identity collate: :meth:`ClipSet.__getitems__` already returns a stacked batch."""
    return batch


@dataclass
class FoldData:
    """The fold's train and validation sets plus the validation rows' identity for predictions."""

    train: ClipSet
    val: ClipSet
    val_rows: pd.DataFrame  # video_id, path, label (splits order)
    n_aug: int


def _row(df: pd.DataFrame, mask: pd.Series) -> str:
    """'row i (video_id v...)' of the first True in ``mask``, for error messages."""
    i = int(np.flatnonzero(mask.to_numpy())[0])
    vid = f" (video_id {df['video_id'].iloc[i]})" if "video_id" in df.columns else ""
    return f"row {i}{vid}"


def _read_parquet(path: str | os.PathLike[str], columns: list[str]) -> pd.DataFrame:
    try:
        df = pd.read_parquet(path)
    except Exception as exc:
        raise ValueError(f"{path}: cannot read parquet: {exc}") from exc
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
    bad = ~df["label"].isin([0, 1])
    if bad.any():
        raise ValueError(
            f"{path}: {_row(df, bad)} has label {df['label'][bad].tolist()[0]!r} (expected 0 or 1)"
        )
    return df


def load_fold(
    clips: str | os.PathLike[str],
    index: str | os.PathLike[str],
    splits: str | os.PathLike[str],
    aug_clips: str | os.PathLike[str],
    aug_manifest: str | os.PathLike[str],
    fold: int | None,
) -> FoldData:
    """Assemble fold ``fold``'s datasets from the upstream artifacts, checking they fit together.

    ``fold=None`` (the final model, :mod:`fvc.refit`): every row of ``splits`` trains, no
    validation set (``val`` is empty).
    """
    main = open_clips(clips)
    n_index = len(pd.read_parquet(index, columns=["clip_row"]))
    if n_index != main.shape[0]:
        raise ValueError(f"{clips} has {main.shape[0]} clips but {index} lists {n_index}")
    sp = _read_parquet(splits, ["video_id", "path", "label", "clip_row", "fold"])
    bad_row = (sp["clip_row"] < 0) | (sp["clip_row"] >= main.shape[0])
    if bad_row.any():
        raise ValueError(
            f"{splits}: {_row(sp, bad_row)} has clip_row {sp['clip_row'][bad_row].tolist()[0]}, "
            f"outside {clips} (0..{main.shape[0] - 1})"
        )
    if fold is not None and fold not in set(sp["fold"].tolist()):
        raise ValueError(f"{splits}: no video has fold {fold} (folds: {sorted(set(sp['fold']))})")
    aug = open_clips(aug_clips)
    man = _read_parquet(aug_manifest, ["aug_row", "video_id", "label"]).sort_values("aug_row")
    if len(man) != aug.shape[0] or (len(man) and man["aug_row"].tolist() != list(range(len(man)))):
        raise ValueError(
            f"{aug_manifest} lists {len(man)} rows (aug_row 0..M-1 expected) but {aug_clips} "
            f"has {aug.shape[0]}"
        )
    if aug.shape[0] and aug.shape[1:] != main.shape[1:]:
        raise ValueError(f"{aug_clips}: clip shape {aug.shape[1:]} differs from {main.shape[1:]}")
    train_rows = sp if fold is None else sp[sp["fold"] != fold]
    val_rows = sp.iloc[:0] if fold is None else sp[sp["fold"] == fold]
    leaked = sorted(set(man["video_id"]) & set(val_rows["video_id"]))
    if leaked:
        raise ValueError(
            f"{aug_manifest}: augmented copies of validation video(s) of fold {fold}: "
            f"{', '.join(leaked[:5])} (stale augment output?)"
        )
    labels = np.concatenate([train_rows["label"].to_numpy(), man["label"].to_numpy()])
    if len(train_rows) == 0 or len(np.unique(labels)) < 2:
        counts = np.bincount(labels, minlength=2).tolist()
        raise ValueError(
            f"{splits}: fold {fold} trains on {counts} clips of classes 0/1; needs both"
        )
    files = [str(clips), str(aug_clips)]
    train = ClipSet(
        files,
        np.r_[np.zeros(len(train_rows)), np.ones(len(man))],
        np.r_[train_rows["clip_row"].to_numpy(), np.arange(len(man))],
        labels,
    )
    val = ClipSet(
        files[:1], np.zeros(len(val_rows)), val_rows["clip_row"].to_numpy(), val_rows["label"]
    )
    ident = val_rows[["video_id", "path", "label"]].reset_index(drop=True)
    return FoldData(train=train, val=val, val_rows=ident, n_aug=len(man))


def epoch_batches(
    labels: np.ndarray, batch_size: int, seed: int, fold: int, epoch: int, sampler: str = "random"
) -> list[np.ndarray]:
    """The index batches of one epoch: a pure function of its arguments (resume relies on it).

    ``random``: a permutation, cut into batches (the last may be smaller). ``balanced``: as many
    draws with replacement, each class equally likely (inverse-frequency weights).
    """
    labels = np.asarray(labels)
    n = len(labels)
    rng = np.random.default_rng([seed, fold, epoch])
    if sampler == "random":
        order = rng.permutation(n)
    elif sampler == "balanced":
        counts = np.bincount(labels, minlength=2).astype(np.float64)
        weights = 1.0 / counts[labels]
        order = rng.choice(n, size=n, replace=True, p=weights / weights.sum())
    else:
        raise ValueError(f"train.sampler: unknown sampler {sampler!r} (random or balanced)")
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def class_weights(labels: np.ndarray, mode: str) -> torch.Tensor:
    """Loss weight per class: ``auto`` = n / (2 n_c) (inverse frequency), ``none`` = ones."""
    if mode == "none":
        return torch.ones(2)
    if mode != "auto":
        raise ValueError(f"train.class_weights: unknown mode {mode!r} (auto or none)")
    counts = np.bincount(np.asarray(labels), minlength=2).astype(np.float64)
    return torch.tensor(len(labels) / (2.0 * counts), dtype=torch.float32)


@dataclass(frozen=True)
class InputNorm:
    """Per-channel input mean and std, shaped ``(1, 3, 1, 1, 1)`` and already on the device.

    Made once per run by :func:`input_norm` (creating them per micro-batch would be a blocking
    host-to-device copy every step).
    """

    mean: torch.Tensor
    std: torch.Tensor


def input_norm(device: torch.device | str, mean: tuple = MEAN, std: tuple = STD) -> InputNorm:
    """The :class:`InputNorm` of a run: the one place the statistics come from."""
    shape = (1, 3, 1, 1, 1)
    return InputNorm(
        torch.tensor(mean, dtype=torch.float32, device=device).view(shape),
        torch.tensor(std, dtype=torch.float32, device=device).view(shape),
    )


def to_model_input(x: torch.Tensor, norm: InputNorm) -> torch.Tensor:
    """uint8 ``(B, T, H, W, C)`` -> normalised float32 ``(B, C, T, H, W)`` on ``norm``'s device.

    The copy is ``non_blocking`` (asynchronous from a pinned batch) and the layout change is
    made on uint8, a quarter of the bytes of float.
    """
    x = x.to(norm.mean.device, non_blocking=True).permute(0, 4, 1, 2, 3).contiguous()
    return x.float().div_(255.0).sub_(norm.mean).div_(norm.std)
