"""Tests of fvc.augment on tiny fake clips: real torchvision ops, real files, no mocks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fvc.augment import AugmentConfig, augment_clip, augment_fold, derive_seed

T, S = 6, 24
CFG = {
    "copies": 2,
    "seed": 7,
    "p_flip": 0.5,
    "p_affine": 0.5,
    "p_color": 0.5,
    "p_blur": 0.2,
    "p_noise": 0.3,
    "p_erase": 0.2,
    "p_temporal": 0.3,
}


#: The manifest's columns (docs/artifacts.md).
MANIFEST = ["aug_row", "video_id", "clip_row", "copy", "window", "label", "ops"]


def _make_inputs(
    tmp: Path, n: int = 10, n_folds: int = 3, shuffle: bool = False
) -> tuple[Path, Path]:
    """n random-ish videos with a flickering patch; clip_row deliberately != row order."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(n, 1, S, S, 3), dtype=np.uint8)
    clips = np.repeat(base, T, axis=1)
    clips[:, ::2, 4:10, 4:10, :] = 255  # flicker
    clips_path = tmp / "clips.npy"
    np.save(clips_path, clips)
    rows = [
        {
            "video_id": f"v{i + 1:05d}",
            "path": f"/x/{i}.mp4",
            "label": i % 2,
            "group": f"g{i}",
            "clip_row": n - 1 - i,
            "fold": i % n_folds,
        }
        for i in range(n)
    ]
    splits = pd.DataFrame(rows)
    if shuffle:
        splits = splits.sample(frac=1.0, random_state=3).reset_index(drop=True)
    splits_path = tmp / ("splits_shuffled.parquet" if shuffle else "splits.parquet")
    splits.to_parquet(splits_path, index=False)
    return clips_path, splits_path


def _run(tmp: Path, clips: Path, splits: Path, fold: int, cfg: dict, tag: str = "a"):
    out_clips, out_manifest = tmp / tag / "clips.npy", tmp / tag / "manifest.parquet"
    augment_fold(clips, splits, fold, out_clips, out_manifest, cfg)
    return np.load(out_clips), pd.read_parquet(out_manifest), out_clips


def test_fold_outputs_contract(tmp_path: Path) -> None:
    clips_path, splits_path = _make_inputs(tmp_path)
    src = np.load(clips_path)
    splits = pd.read_parquet(splits_path)
    fold = 1
    aug, man, out_clips = _run(tmp_path, clips_path, splits_path, fold, CFG)
    train = splits[splits["fold"] != fold]
    assert aug.dtype == np.uint8 and aug.shape == (len(train) * 2, T, S, S, 3)
    assert list(man.columns) == MANIFEST
    assert (man["window"] == 0).all()  # one window per video
    assert man["aug_row"].tolist() == list(range(len(man)))
    # Only training videos of the fold, each exactly `copies` times, labels/clip_rows carried over.
    assert set(man["video_id"]) == set(train["video_id"])
    assert not set(man["video_id"]) & set(splits.loc[splits["fold"] == fold, "video_id"])
    assert all(sorted(c) == [0, 1] for c in man.groupby("video_id")["copy"].apply(list))
    by_id = train.set_index("video_id")
    assert (man["label"].to_numpy() == by_id.loc[man["video_id"], "label"].to_numpy()).all()
    assert (man["clip_row"].to_numpy() == by_id.loc[man["video_id"], "clip_row"].to_numpy()).all()
    assert man["ops"].str.len().gt(0).all() and not man["ops"].eq("none").any()
    # Each copy differs from its source and from the other copy of the same video.
    for vid, grp in man.groupby("video_id"):
        a, b = (aug[r] for r in grp.sort_values("copy")["aug_row"])
        source = src[int(grp["clip_row"].iloc[0])]
        assert not np.array_equal(a, source) and not np.array_equal(b, source), vid
        assert not np.array_equal(a, b), vid
    # No temp files left next to the outputs.
    assert sorted(p.name for p in out_clips.parent.iterdir()) == ["clips.npy", "manifest.parquet"]


def test_deterministic_and_order_independent(tmp_path: Path) -> None:
    clips_path, splits_path = _make_inputs(tmp_path)
    _, shuffled_path = _make_inputs(tmp_path, shuffle=True)
    torch.manual_seed(1)
    before = torch.get_rng_state()
    _run(tmp_path, clips_path, splits_path, 0, CFG, "a")
    assert torch.equal(before, torch.get_rng_state()), "global torch RNG must not be used"
    torch.manual_seed(999)  # a different global state must not matter
    _run(tmp_path, clips_path, shuffled_path, 0, CFG, "b")
    for name in ("clips.npy", "manifest.parquet"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    # A different seed gives different copies.
    aug_a = np.load(tmp_path / "a" / "clips.npy")
    aug_c, _, _ = _run(tmp_path, clips_path, splits_path, 0, {**CFG, "seed": 8}, "c")
    assert not np.array_equal(aug_a, aug_c)


def test_copies_zero_writes_empty_outputs(tmp_path: Path) -> None:
    clips_path, splits_path = _make_inputs(tmp_path)
    aug, man, _ = _run(tmp_path, clips_path, splits_path, 2, {**CFG, "copies": 0})
    assert aug.shape == (0, T, S, S, 3) and aug.dtype == np.uint8
    assert len(man) == 0 and list(man.columns) == MANIFEST


@pytest.mark.parametrize(
    ("fold", "cfg", "match"),
    [
        (5, CFG, r"fold 5 does not exist; folds present: \[0, 1, 2\]"),
        (0, {**CFG, "p_flip": 1.5}, r"augment\.p_flip: 1\.5 must be <= 1"),
        (0, {**CFG, "copies": -1}, r"augment\.copies: -1 must be >= 0"),
        (0, {**CFG, "p_zoom": 0.1}, r"augment: unknown key\(s\) p_zoom"),
    ],
)
def test_bad_input_creates_nothing(tmp_path: Path, fold: int, cfg: dict, match: str) -> None:
    clips_path, splits_path = _make_inputs(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=match):
        augment_fold(clips_path, splits_path, fold, out / "clips.npy", out / "m.parquet", cfg)
    assert not out.exists() or list(out.iterdir()) == []


def test_bad_clip_row_and_error_mid_write_leave_nothing(tmp_path: Path) -> None:
    clips_path, splits_path = _make_inputs(tmp_path)
    splits = pd.read_parquet(splits_path)
    splits.loc[splits["fold"] != 0, "clip_row"] = splits["clip_row"] + 100
    splits.to_parquet(splits_path, index=False)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"clip_row 1\d\d outside the 10 clips"):
        augment_fold(clips_path, splits_path, 0, out / "clips.npy", out / "m.parquet", CFG)
    assert not out.exists() or list(out.iterdir()) == []
    # A failure after the memmap was opened (manifest path blocked by a file) removes the
    # temp clips too: neither output nor temp file remains.
    good = tmp_path / "good"
    good.mkdir()
    clips_path, splits_path = _make_inputs(good)
    out.mkdir(exist_ok=True)
    (out / "blocker").write_text("a file where a directory is needed")
    with pytest.raises(OSError):
        augment_fold(
            clips_path, splits_path, 0, out / "clips.npy", out / "blocker" / "m.parquet", CFG
        )
    assert sorted(p.name for p in out.iterdir()) == ["blocker"]


def test_augment_clip_ops_keep_shape_and_flicker() -> None:
    rng = np.random.default_rng(1)
    clip = np.repeat(rng.integers(60, 200, size=(1, S, S, 3), dtype=np.uint8), T, axis=0)
    clip[::2, 8:14, 8:14, :] = 250
    all_on = AugmentConfig(
        p_flip=1, p_affine=1, p_color=1, p_blur=1, p_noise=1, p_erase=1, p_temporal=1
    )
    kinds = set()
    for copy in range(12):
        out, ops = augment_clip(clip, all_on, derive_seed(7, 0, "v00001", copy))
        assert out.shape == clip.shape and out.dtype == np.uint8
        assert ops.startswith("flip+affine+color+blur+noise+erase+")
        kinds.add(ops.rsplit("+", 1)[1].rstrip("0123456789"))
        # The pasted patch still flickers: frame-to-frame change stays large.
        diffs = np.abs(np.diff(out.astype(np.int16), axis=0)).mean(axis=(1, 2, 3))
        assert diffs.max() > 3.0, (ops, diffs)
    assert kinds == {"drop", "dup", "reverse"}
    none = AugmentConfig(
        **{f"p_{k}": 0.0 for k in ("flip", "affine", "color", "blur", "noise", "erase", "temporal")}
    )
    same, ops = augment_clip(clip, none, 123)
    assert ops == "none" and np.array_equal(same, clip)


def test_temporal_ops_only_reorder_frames() -> None:
    clip = np.stack([np.full((S, S, 3), 10 * k, dtype=np.uint8) for k in range(T)])
    only_t = AugmentConfig(
        p_flip=0, p_affine=0, p_color=0, p_blur=0, p_noise=0, p_erase=0, p_temporal=1
    )
    for copy in range(10):
        out, ops = augment_clip(clip, only_t, derive_seed(0, 0, "v", copy))
        order = [int(f[0, 0, 0]) // 10 for f in out]
        if ops == "reverse":
            assert order == list(range(T))[::-1]
            continue
        kind = ops.rstrip("0123456789")
        at = int(ops.removeprefix(kind))
        missing = at if kind == "drop" else T - 1
        assert len(order) == T and order == sorted(order), ops
        assert set(order) == set(range(T)) - {missing}, ops
        if kind == "dup":
            assert order.count(at) == 2, ops


def test_derive_seed_is_stable() -> None:
    assert derive_seed(7, 0, "v00001", 0) == derive_seed(7, 0, "v00001", 0)
    seeds = {derive_seed(7, f, v, c) for f in range(3) for v in ("v1", "v2") for c in range(3)}
    assert len(seeds) == 18
    # Pinned: a change here silently changes every augmented dataset.
    assert derive_seed(7, 0, "v00001", 0) == 3281382512155473255
