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

Several clips per video (``data.clips_per_video`` C > 1, clips.npy ``(N, C, T, S, S, 3)``): a
training item shows one window per epoch, :func:`epoch_windows` (also a pure function of
``(train.seed, fold, epoch)``, set by :meth:`ClipSet.set_epoch`); evaluation scores every window
(:meth:`ClipSet.window_items`) and :func:`video_scores` averages them into one P(fake) per video.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from fvc.config import default

#: Kinetics-400 statistics used by torchvision's video models (also fine for small3d).
MEAN = (0.43216, 0.394666, 0.37645)
STD = (0.22803, 0.22145, 0.216989)


def open_clips(path: str | os.PathLike[str]) -> np.ndarray:
    """Memory-map a uint8 clip array as ``(N, C, T, S, S, 3)`` (one-line error if it is not one).

    ``(N, T, S, S, 3)`` files (one window per video, ``data.clips_per_video: 1``, and the
    augmented copies) come back as a view with C = 1; ``(N, C, T, S, S, 3)`` files as they are.
    """
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:
        raise ValueError(f"{path}: cannot read clip array: {exc}") from exc
    if arr.dtype != np.uint8 or arr.ndim not in (5, 6) or arr.shape[-1] != 3:
        raise ValueError(
            f"{path}: expected uint8 clips of shape (N, T, S, S, 3) or (N, C, T, S, S, 3), got "
            f"{arr.dtype} {arr.shape}"
        )
    return arr[:, None] if arr.ndim == 5 else arr


#: Third entropy word of the per-epoch window draw: a stream apart from the batch order's.
WINDOW_STREAM = 0x77696E64  # "wind"


def epoch_windows(n_windows: np.ndarray, seed: int, fold: int, epoch: int) -> np.ndarray:
    """The window each training item shows in epoch ``epoch``: a pure function of the arguments.

    ``n_windows[i]`` is item i's number of windows (``data.clips_per_video`` for a video, 1 for
    an augmented copy); each item draws one uniformly, from its own random stream
    ``(seed, fold, epoch, WINDOW_STREAM)`` so the batch order (:func:`epoch_batches`) is the same
    as with one window. A resumed run redraws exactly the same windows.
    """
    n_windows = np.asarray(n_windows, dtype=np.int64)
    if len(n_windows) == 0 or (n_windows == 1).all():
        return np.zeros(len(n_windows), dtype=np.int64)
    rng = np.random.default_rng([seed, fold, epoch, WINDOW_STREAM])
    return rng.integers(0, n_windows).astype(np.int64)


def video_scores(window_probs: np.ndarray, video_index: np.ndarray) -> np.ndarray:
    """Video-level P(fake): the mean of each video's window probabilities (float64).

    ``video_index[j]`` is the video (0..V-1) of window ``j``; the result has one value per
    video in that order. With one window per video it returns the probabilities unchanged
    (bit for bit). Evaluation (:func:`fvc.train.evaluate`) and prediction both score videos
    through this function.
    """
    idx = np.asarray(video_index, dtype=np.int64)
    probs = np.asarray(window_probs, dtype=np.float64)
    if idx.shape != probs.shape or idx.ndim != 1:
        raise ValueError(f"window_probs {probs.shape} and video_index {idx.shape} must match (1-D)")
    if len(idx) == 0:
        return probs.copy()
    counts = np.bincount(idx)
    if idx.min() < 0 or (counts == 0).any():
        raise ValueError("video_index must cover the videos 0..V-1, each with at least one window")
    return np.bincount(idx, weights=probs) / counts


class ClipSet(torch.utils.data.Dataset):
    """Clips drawn from one or more ``.npy`` files; item ``i`` is ``(uint8 (T,H,W,C), label)``.

    ``sources[i]`` names the file and ``rows[i]`` the row in it. Arrays are opened lazily per
    process (a memmap must not be pickled into DataLoader workers: that would copy it).

    A row may hold several temporal windows (``data.clips_per_video``): an item shows window
    ``windows[i]``, the draw of :meth:`set_epoch` (window 0 before any draw), and
    :meth:`window_items` lists every (item, window) pair for evaluation.
    """

    def __init__(self, files: list[str], sources: np.ndarray, rows: np.ndarray, labels: np.ndarray):
        self.files = [str(f) for f in files]
        self.sources = np.asarray(sources, dtype=np.int64)
        self.rows = np.asarray(rows, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.windows: np.ndarray | None = None  # per item; None = window 0
        self._arrays: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_arrays": None}

    def _open(self) -> list[np.ndarray]:
        if self._arrays is None:
            self._arrays = [open_clips(f) for f in self.files]
        return self._arrays

    def n_windows(self) -> np.ndarray:
        """Number of windows of each item (the C of its file)."""
        per_file = np.array([a.shape[1] for a in self._open()], dtype=np.int64)
        return per_file[self.sources] if len(self.sources) else np.zeros(0, dtype=np.int64)

    def set_epoch(self, seed: int, fold: int, epoch: int) -> None:
        """Show the windows of :func:`epoch_windows` for this epoch (call before the loader)."""
        self.windows = epoch_windows(self.n_windows(), seed, fold, epoch)

    def window_items(self) -> tuple[np.ndarray, np.ndarray]:
        """``(items, windows)``: every window of every item, item by item (evaluation order)."""
        n = self.n_windows()
        items = np.repeat(np.arange(len(n), dtype=np.int64), n)
        starts = np.cumsum(n) - n
        return items, np.arange(len(items), dtype=np.int64) - np.repeat(starts, n)

    def get_batch(self, indices: Any, windows: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 ``(B, T, H, W, C)`` clips and int64 labels of ``indices`` (in that order).

        ``windows`` (one per index) picks the window shown; default: :attr:`windows`.
        """
        idx = np.asarray(indices, dtype=np.int64)
        if windows is not None:
            win = np.asarray(windows, dtype=np.int64)
        elif self.windows is not None:
            win = self.windows[idx]
        else:
            win = np.zeros(len(idx), dtype=np.int64)
        arrays = self._open()
        out = np.empty((len(idx), *arrays[0].shape[2:]), dtype=np.uint8)
        for s, arr in enumerate(arrays):
            where = np.flatnonzero(self.sources[idx] == s)
            if len(where):
                out[where] = arr[self.rows[idx[where]], win[where]]
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
class FoldInputs:
    """The train rule's inputs (docs/artifacts.md); field names = the rule's input names."""

    clips: str | os.PathLike[str]
    index: str | os.PathLike[str]
    splits: str | os.PathLike[str]
    aug_clips: str | os.PathLike[str]
    aug_manifest: str | os.PathLike[str]


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


def load_fold(inputs: FoldInputs, fold: int | None) -> FoldData:
    """Assemble fold ``fold``'s datasets from the upstream artifacts, checking they fit together.

    ``fold=None`` (the final model, :mod:`fvc.refit`): every row of ``splits`` trains, no
    validation set (``val`` is empty).
    """
    clips, index, splits = inputs.clips, inputs.index, inputs.splits
    aug_clips, aug_manifest = inputs.aug_clips, inputs.aug_manifest
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
    if aug.shape[0] and aug.shape[2:] != main.shape[2:]:  # window shapes (T, S, S, 3)
        raise ValueError(f"{aug_clips}: clip shape {aug.shape[2:]} differs from {main.shape[2:]}")
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
    labels: np.ndarray,
    batch_size: int,
    seed: int,
    fold: int,
    epoch: int,
    sampler: str = default("train", "sampler"),
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
    """The :class:`InputNorm` of a run: the one place the statistics come from.

    Training and prediction pass ``fvc.models.input_normalization(model_cfg)`` (the weights' own
    statistics for torchvision weights, else :data:`MEAN` / :data:`STD`).
    """
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
