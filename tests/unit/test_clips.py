"""Several clips per video: window sampling, decoding, cache, training, scores.

Real videos (tests/conftest.py ``write_video``: frame i is grey ``frame_value(i)``, so the
decoded grey level tells which frame a window holds), real clip caches, a real model and the
real training loop; no mocks.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
import torch

import fvc.video as video
from bench.synthetic import fit_synthetic, fold_inputs, write_synthetic_inputs
from fvc.augment import augment_fold, copy_window
from fvc.data import (
    METADATA_COLUMNS,
    DataError,
    build_clip_cache,
    decode_settings,
    load_metadata,
)
from fvc.datasets import (
    epoch_batches,
    epoch_windows,
    input_norm,
    load_fold,
    open_clips,
    to_model_input,
    video_scores,
)
from fvc.models import build_model
from fvc.train import TrainingInterrupted, evaluate
from fvc.train import resume as ckpt
from fvc.video import (
    VideoError,
    decode_clip,
    decode_windows,
    sample_indices,
    window_indices,
    window_settings,
)
from tests.conftest import VALUE_PERIOD, build_cache, frame_index, write_video

DATA = {"positive_label": "fake", "group_column": None, "num_frames": 4, "size": 16}
BASE = {"epochs": 3, "batch_size": 4, "checkpoint_every_n_batches": 2, "seed": 5}
MODEL = {"name": "small3d", "dropout": 0.2}


def _frames(window: np.ndarray) -> list[int]:
    """Frame index of each frame of a (T, S, S, 3) window (grey level right of the marker)."""
    s = window.shape[1]
    return [frame_index(f[s // 2, s - 3].mean()) for f in window]


# ---------------------------------------------------------------- which frames a window holds


def test_window_indices_spread_and_stride() -> None:
    # spread (stride null/0): C = 1 is the whole-video sampling; C windows tile the video
    assert window_indices(80, 8).tolist() == [sample_indices(80, 8).tolist()]
    assert window_indices(80, 8, 1, 0).tolist() == [sample_indices(80, 8).tolist()]
    assert window_indices(24, 4, 3).tolist() == [[1, 3, 5, 7], [9, 11, 13, 15], [17, 19, 21, 23]]
    # stride 2: 4 frames 2 apart, centred on each third of the video, kept inside it
    assert window_indices(24, 4, 3, 2).tolist() == [[0, 2, 4, 6], [8, 10, 12, 14], [16, 18, 20, 22]]
    assert window_indices(100, 4, 1, 3).tolist() == [[45, 48, 51, 54]]  # one window: the middle
    # too short for stride 4 (span 21 > 12 frames): the largest stride that fits (2)
    assert window_indices(12, 6, 3, 4).tolist() == [
        [0, 2, 4, 6, 8, 10],
        [0, 2, 4, 6, 8, 10],
        [1, 3, 5, 7, 9, 11],
    ]
    # fewer frames than num_frames: every window repeats frames like the one-window padding
    assert window_indices(5, 8, 2, 2).tolist() == [sample_indices(5, 8).tolist()] * 2
    with pytest.raises(ValueError, match="n_frames must be positive"):
        window_indices(0, 4, 2)


@pytest.mark.parametrize(
    ("cfg", "key"),
    [
        ({"clips_per_video": 0}, "data.clips_per_video"),
        ({"clips_per_video": "2"}, "data.clips_per_video"),
        ({"clips_per_video": True}, "data.clips_per_video"),
        ({"frame_stride": -1}, "data.frame_stride"),
        ({"frame_stride": 1.5}, "data.frame_stride"),
    ],
)
def test_bad_window_settings_name_the_key(cfg: dict, key: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=key):
        window_settings(cfg)
    md = tmp_path / "md.parquet"
    pd.DataFrame({"path": ["x"], "frames": [1]}).to_parquet(md)
    with pytest.raises(DataError, match=key):  # one line from the preprocess stage
        build_clip_cache(
            md, tmp_path / "c.npy", tmp_path / "c.parquet", tmp_path / "x.tsv", {**DATA, **cfg}
        )
    assert not list(tmp_path.glob("c.*"))
    assert window_settings({}) == window_settings({"frame_stride": 0}) == (1, None)


def test_decoded_windows_hold_exactly_the_planned_frames(tmp_path: Path) -> None:
    path = write_video(tmp_path / "v.mp4", frames=24, w=64, h=48)  # 24 < 25: unique greys
    for stride, expected in [
        (None, [[1, 3, 5, 7], [9, 11, 13, 15], [17, 19, 21, 23]]),
        (2, [[0, 2, 4, 6], [8, 10, 12, 14], [16, 18, 20, 22]]),
        (1, [[2, 3, 4, 5], [10, 11, 12, 13], [18, 19, 20, 21]]),  # centred on 4, 12, 20
    ]:
        assert window_indices(24, 4, 3, stride).tolist() == expected
        windows, padded = decode_windows(path, 4, 32, None, "pad", "letterbox", 3, stride)
        assert windows.shape == (3, 4, 32, 32, 3) and windows.dtype == np.uint8 and not padded
        assert [_frames(w) for w in windows] == expected, stride
    # one window without stride is decode_clip, bit for bit
    one, _ = decode_windows(path, 4, 32, 24)
    clip, _ = decode_clip(path, 4, 32, 24)
    assert one.shape == (1, 4, 32, 32, 3) and np.array_equal(one[0], clip)


def test_windows_of_a_long_video_seek_to_the_same_frames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_video(tmp_path / "long.mp4", frames=400, gop_size=16)
    expected = window_indices(400, 3, 2, 5)  # 11 frames long, around frames 100 and 300
    assert expected.tolist() == [[94, 99, 104], [294, 299, 304]]
    calls: list[int] = []
    real_seek = video._decode_seeking
    monkeypatch.setattr(video, "_decode_seeking", lambda *a: calls.append(1) or real_seek(*a))
    seeked, _ = decode_windows(path, 3, 32, 400, clips_per_video=2, frame_stride=5)
    assert calls, "6 frames out of 400 should take the seeking path"
    monkeypatch.setattr(video, "SEEK_MIN_FRAMES", 10**9)
    sequential, _ = decode_windows(path, 3, 32, 400, clips_per_video=2, frame_stride=5)
    assert np.array_equal(seeked, sequential)
    assert [_frames(w) for w in seeked] == (expected % VALUE_PERIOD).tolist()


def test_short_video_windows_are_padded_or_excluded(tmp_path: Path) -> None:
    path = write_video(tmp_path / "short.mp4", frames=5)
    windows, padded = decode_windows(path, 4, 16, clips_per_video=2)  # 5 frames for 2 x 4
    assert padded and [_frames(w) for w in windows] == [[0, 0, 1, 2], [2, 3, 4, 4]]
    with pytest.raises(VideoError, match=r"too short: 5 frames < 2 window\(s\) of num_frames=4"):
        decode_windows(path, 4, 16, short_videos="exclude", clips_per_video=2)
    # a stride only needs num_frames frames: overlapping windows, no repeated frame
    windows, padded = decode_windows(path, 4, 16, clips_per_video=2, frame_stride=3)
    assert not padded and [_frames(w) for w in windows] == [[0, 1, 2, 3], [1, 2, 3, 4]]


# ---------------------------------------------------------------- the clip cache


@pytest.fixture
def metadata(tmp_path: Path) -> Path:
    """metadata.parquet of six real videos of 5 to 64 frames (alternating labels)."""
    names = []
    for i, n in enumerate([5, 40, 23, 64, 17, 30]):
        write_video(tmp_path / "videos" / f"v{i}.mp4", frames=n, w=40, h=30)
        names.append(f"videos/v{i}.mp4")
    table = pd.DataFrame({"path": names, "label": ["fake", "real"] * 3})
    table.to_csv(tmp_path / "m.csv", index=False)
    load_metadata(DATA, tmp_path / "m.csv", tmp_path / "md.parquet", tmp_path / "ex.tsv", 1)
    return tmp_path / "md.parquet"


def _build(md: Path, out: Path, cache: Path | None = None, **cfg) -> pd.DataFrame:
    return build_cache(md, out, {**DATA, **cfg}, workers=1, cache_dir=cache)


def test_single_window_clips_npy_is_byte_identical_to_the_one_clip_path(
    metadata: Path, tmp_path: Path
) -> None:
    """C = 1: clips.npy equals, byte for byte, frames at sample_indices saved by np.save,
    whatever spelling of the defaults; and the decode cache key is the one built before."""
    meta = pd.read_parquet(metadata)
    ref = []
    for path, n in zip(meta["path"], meta["frames"], strict=True):
        idx = sample_indices(int(n), 4).tolist()
        with av.open(path) as container:  # the one-clip decode, without any window code
            got, _ = video._decode_sequential(container, container.streams.video[0], set(idx), 16)
        ref.append(np.stack([got[i] for i in idx]))
    np.save(tmp_path / "ref.npy", np.stack(ref))
    expected = (tmp_path / "ref.npy").read_bytes()
    for tag, cfg in [
        ("absent", {}),
        ("one", {"clips_per_video": 1, "frame_stride": None}),
        ("zero", {"clips_per_video": 1, "frame_stride": 0}),
    ]:
        _build(metadata, tmp_path / tag, **cfg)
        assert (tmp_path / tag / "clips.npy").read_bytes() == expected, tag
        # the key of caches written before clips_per_video existed (the workflow's decode
        # params carried data.resize since before then): they stay valid
        settings = {"num_frames": 4, "short_videos": "pad", "size": 16, "resize": "letterbox"}
        assert decode_settings({**DATA, **cfg}) == json.dumps(
            {"decoder": f"av {av.__version__}", **settings}, sort_keys=True
        )
    index = pd.read_parquet(tmp_path / "one" / "clips.parquet")
    assert list(index.columns) == [*METADATA_COLUMNS, "clip_row", "padded"]  # unchanged


def test_windows_are_decoded_once_into_the_cache(metadata: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    index = _build(metadata, tmp_path / "c2", cache, clips_per_video=2, frame_stride=2)
    clips = np.load(tmp_path / "c2" / "clips.npy")
    assert clips.shape == (6, 2, 4, 16, 16, 3)  # (N, C, T, S, S, 3): N*C*T*S*S*3 bytes
    assert (tmp_path / "c2" / "clips.npy").stat().st_size == 128 + 6 * 2 * 4 * 16 * 16 * 3
    assert index["clip_row"].tolist() == list(range(6))
    assert index["padded"].tolist() == [False] * 6  # stride 2 fits 4 frames in 5 (stride 1)
    for row in index.itertuples():
        windows, _ = decode_windows(row.path, 4, 16, row.frames, clips_per_video=2, frame_stride=2)
        assert np.array_equal(clips[row.clip_row], windows)
    # same settings: every video reused; changing C or the stride decodes everything again
    assert (
        _build(metadata, tmp_path / "again", cache, clips_per_video=2, frame_stride=2).attrs[
            "reused"
        ]
        == 6
    )
    assert (tmp_path / "again" / "clips.npy").read_bytes() == (
        tmp_path / "c2" / "clips.npy"
    ).read_bytes()
    for cfg in (
        {"clips_per_video": 3, "frame_stride": 2},
        {"clips_per_video": 3},
        {},
        {"frame_stride": 2},
    ):
        built = _build(metadata, tmp_path / "x", cache, **cfg)
        assert built.attrs["decoded"] == 6, cfg
    # open_clips sees both layouts as (N, C, T, S, S, 3)
    assert open_clips(tmp_path / "c2" / "clips.npy").shape == (6, 2, 4, 16, 16, 3)
    assert open_clips(tmp_path / "x" / "clips.npy").shape == (6, 1, 4, 16, 16, 3)


# ---------------------------------------------------------------- augmentation


def test_each_augmented_copy_augments_one_window(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n, c = 8, 3
    clips = rng.integers(0, 256, size=(n, c, 4, 12, 12, 3), dtype=np.uint8)
    np.save(tmp_path / "clips.npy", clips)
    ids, parity = [f"v{i}" for i in range(n)], [i % 2 for i in range(n)]
    splits = pd.DataFrame({"video_id": ids, "clip_row": range(n), "label": parity, "fold": parity})
    splits.to_parquet(tmp_path / "splits.parquet", index=False)
    only_flip = {
        "copies": 3,
        "p_flip": 1.0,
        "p_affine": 0.0,
        "p_color": 0.0,
        "p_blur": 0.0,
        "p_noise": 0.0,
        "p_erase": 0.0,
        "p_temporal": 0.0,
    }
    man = augment_fold(
        tmp_path / "clips.npy",
        tmp_path / "splits.parquet",
        0,
        tmp_path / "a.npy",
        tmp_path / "a.parquet",
        only_flip,
    )
    aug = np.load(tmp_path / "a.npy")
    assert aug.shape == (4 * 3, 4, 12, 12, 3)  # one window per copy: not x C
    assert pd.read_parquet(tmp_path / "a.parquet")["window"].tolist() == man["window"].tolist()
    for rec in man.itertuples():
        assert rec.window == copy_window(7, 0, rec.video_id, rec.copy, c)
        assert np.array_equal(aug[rec.aug_row], clips[rec.clip_row, rec.window][:, :, ::-1])
    # three copies of a video take its three windows
    assert all(sorted(w) == [0, 1, 2] for w in man.groupby("video_id")["window"].apply(list))


# ---------------------------------------------------------------- training and evaluation


def test_window_draw_is_a_function_of_seed_fold_epoch() -> None:
    n_windows = np.array([3] * 40 + [1] * 10)  # 40 videos with 3 windows, 10 augmented copies
    a = epoch_windows(n_windows, 5, 0, 1)
    assert np.array_equal(a, epoch_windows(n_windows, 5, 0, 1))
    assert a.min() >= 0 and a[:40].max() <= 2 and (a[40:] == 0).all()
    for other in [(5, 0, 2), (5, 1, 1), (6, 0, 1)]:  # another epoch, fold, seed
        assert not np.array_equal(a, epoch_windows(n_windows, *other)), other
    seen = np.stack([epoch_windows(n_windows, 5, 0, e) for e in range(1, 9)])
    assert set(seen[:, :40].ravel().tolist()) == {0, 1, 2}
    assert (epoch_windows(np.ones(7, int), 5, 0, 3) == 0).all()
    # the batch order does not depend on the windows
    labels = np.arange(50) % 2
    assert all(
        np.array_equal(x, y)
        for x, y in zip(
            epoch_batches(labels, 4, 5, 0, 1), epoch_batches(labels, 4, 5, 0, 1), strict=True
        )
    )


def test_video_scores_average_windows() -> None:
    p = np.array([0.1, 0.5, 0.9, 0.2, 0.4, 0.3], dtype=np.float32)
    assert np.allclose(video_scores(p, [0, 0, 0, 1, 1, 2]), [0.5, 0.3, 0.3])
    single = np.random.default_rng(0).random(9)
    assert np.array_equal(video_scores(single, np.arange(9)), single)  # C = 1: bit for bit
    with pytest.raises(ValueError, match="cover the videos"):
        video_scores(p, [0, 0, 2, 2, 3, 3])
    with pytest.raises(ValueError, match="must match"):
        video_scores(p, [0, 1])


@pytest.fixture(scope="module")
def windowed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Synthetic fold inputs with 3 windows per video (each window its own random clip)."""
    root = tmp_path_factory.mktemp("windowed")
    return write_synthetic_inputs(root, n_videos=24, frames=4, size=16, clips_per_video=3)


def _fit(inputs: dict, root: Path, train: dict | None = None, **kw) -> dict:
    return fit_synthetic(inputs, root, MODEL, {**BASE, **(train or {})}, **kw)


def _weights(root: Path) -> dict[str, torch.Tensor]:
    return ckpt.load_checkpoint(root / "ck" / ckpt.LATEST)["model_state"]


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _manual_probs(model: torch.nn.Module, clips: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """P(fake) of every window of ``rows``, one forward pass per window: (len(rows), C)."""
    model.eval()
    out, norm = np.empty((len(rows), clips.shape[1])), input_norm("cpu")
    with torch.no_grad():
        for i, r in enumerate(rows):
            for w in range(clips.shape[1]):
                x = torch.from_numpy(np.array(clips[r, w]))[None]
                out[i, w] = float(torch.softmax(model(to_model_input(x, norm)), 1)[0, 1])
    return out


def test_datasets_show_the_drawn_window_and_every_window_for_evaluation(windowed: dict) -> None:
    data = load_fold(fold_inputs(windowed), fold=0)
    clips = np.load(windowed["clips"])
    n_train = len(data.train) - data.n_aug
    assert data.train.n_windows().tolist() == [3] * n_train + [1] * data.n_aug
    data.train.set_epoch(5, 0, 2)
    drawn = epoch_windows(data.train.n_windows(), 5, 0, 2)
    x, _ = data.train.get_batch(np.arange(n_train))
    assert np.array_equal(x.numpy(), clips[data.train.rows[:n_train], drawn[:n_train]])
    items, windows = data.val.window_items()
    assert items.tolist() == np.repeat(np.arange(len(data.val)), 3).tolist()
    assert windows.tolist() == [0, 1, 2] * len(data.val)


def test_evaluation_averages_the_windows_of_each_video(windowed: dict) -> None:
    data = load_fold(fold_inputs(windowed), fold=0)
    torch.manual_seed(0)
    model = build_model(MODEL)
    loss, probs, _ = evaluate(model, data.val, input_norm("cpu"), batch_size=5)
    assert probs.shape == (len(data.val),)  # one score per video
    per_window = _manual_probs(model, np.load(windowed["clips"]), data.val.rows)
    assert np.allclose(probs, per_window.mean(axis=1), rtol=0, atol=1e-6)
    labels = np.repeat(data.val.labels, 3)
    p_true = np.where(labels == 1, per_window.ravel(), 1 - per_window.ravel())
    assert loss == pytest.approx(float(np.mean(-np.log(p_true))), abs=1e-5)  # over all windows


@pytest.fixture(scope="module")
def windowed_reference(windowed: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("windowed_ref")
    _fit(windowed, root)
    return root


def test_fold_predictions_are_window_averaged_video_scores(
    windowed: dict, windowed_reference: Path
) -> None:
    out = windowed_reference / "out"
    pred = pd.read_parquet(out / "predictions.parquet")
    splits = pd.read_parquet(windowed["splits"])
    val = splits[splits["fold"] == 0]
    assert pred["video_id"].tolist() == val["video_id"].tolist()  # one row per video
    assert json.loads((out / "metrics.json").read_text())["n_val"] == len(val)
    best = torch.load(out / "best_model.pt", weights_only=True)
    model = build_model(best["model"])
    model.load_state_dict(best["model_state"])
    manual = _manual_probs(model, np.load(windowed["clips"]), val["clip_row"].to_numpy())
    assert np.allclose(pred["prob_fake"], manual.mean(axis=1), rtol=0, atol=1e-6)
    assert not np.allclose(manual[:, 0], manual.mean(axis=1), atol=1e-4)  # windows differ


def test_resume_mid_epoch_is_bit_identical_with_windows(
    windowed: dict, windowed_reference: Path, tmp_path: Path
) -> None:
    with pytest.raises(TrainingInterrupted, match="time budget"):
        # budget already used up: one step of epoch 1, checkpoint, stop
        _fit(
            windowed, tmp_path, {"time_margin_s": 30}, runtime_min=1.0, started_at=time.time() - 30
        )
    state = ckpt.load_checkpoint(tmp_path / "ck" / ckpt.LATEST)
    assert (state["epoch"], state["batch_in_epoch"]) == (0, 1)
    _fit(windowed, tmp_path)
    assert _same_weights(_weights(tmp_path), _weights(windowed_reference))
    ref = pd.read_parquet(windowed_reference / "out" / "predictions.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "out" / "predictions.parquet"), ref)


def test_training_draws_other_windows_than_the_first(windowed: dict, tmp_path: Path) -> None:
    """Same inputs with window 0 only: identical weights when every window equals window 0,
    different weights with the real windows (so training really sees windows 1 and 2)."""
    clips = np.load(windowed["clips"])
    first = {**windowed, "clips": str(tmp_path / "first.npy")}
    np.save(first["clips"], np.ascontiguousarray(clips[:, 0]))  # (N, T, S, S, 3)
    copies = {**windowed, "clips": str(tmp_path / "copies.npy")}
    np.save(copies["clips"], np.repeat(clips[:, :1], 3, axis=1))  # 3 identical windows
    train = {"epochs": 2}
    _fit(first, tmp_path / "first", train)
    _fit(copies, tmp_path / "copies", train)
    _fit(windowed, tmp_path / "real", train)
    assert _same_weights(_weights(tmp_path / "first"), _weights(tmp_path / "copies"))
    assert not _same_weights(_weights(tmp_path / "first"), _weights(tmp_path / "real"))


def test_loader_workers_show_the_same_windows(
    windowed: dict, windowed_reference: Path, tmp_path: Path
) -> None:
    """DataLoader worker processes get the epoch's draw too: same weights as in-process loading."""
    _fit(windowed, tmp_path, {"num_workers": 2})
    assert _same_weights(_weights(tmp_path), _weights(windowed_reference))


def test_predict_scores_average_the_windows_of_each_video(
    metadata: Path, windowed_reference: Path, tmp_path: Path
) -> None:
    """fvc.predict.score on a 2-window cache of real videos: one row per video, P = the mean of
    the model's window probabilities (the same evaluate/video_scores path as validation)."""
    from fvc.predict import score

    index = _build(metadata, tmp_path / "c2", clips_per_video=2, frame_stride=2)
    model_path = windowed_reference / "out" / "best_model.pt"
    scored = score(index, tmp_path / "c2" / "clips.npy", [model_path], batch_size=3)
    assert scored["video_id"].tolist() == index["video_id"].tolist()  # one row per video
    best = torch.load(model_path, weights_only=True)
    model = build_model(best["model"])
    model.load_state_dict(best["model_state"])
    clips = np.load(tmp_path / "c2" / "clips.npy")
    manual = _manual_probs(model, clips, index["clip_row"].to_numpy())
    assert np.allclose(scored["p_fake"], manual.mean(axis=1), rtol=0, atol=1e-6)
