"""The corpus through the data layer (no Snakemake): every format, every kind of video.

Fast (the whole module takes a few seconds): the same checks run through real Snakemake in
test_corpus_workflow.py for each format once.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fvc.data import DataError, build_clip_cache, load_metadata
from fvc.video import decode_clip, probe_video, sample_indices
from tests.conftest import VALUE_PERIOD, frame_index
from tests.corpus.checks import check_exclusions, real_paths, usable_files
from tests.corpus.corpus import (
    BROKEN,
    FORMATS,
    GOOD,
    NUM_FRAMES,
    Case,
    Metadata,
    add_conflict,
    write_metadata,
)

SIZE = 32


def _run(meta: Metadata, out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """load_metadata + build_clip_cache into ``out``, as the load_data and preprocess rules do."""
    md = load_metadata(
        meta.data,
        meta.path,
        out / "metadata.parquet",
        out / "excluded.tsv",
        min_per_class=2,
        workers=2,
    )
    index = build_clip_cache(
        out / "metadata.parquet",
        out / "clips.npy",
        out / "clips.parquet",
        out / "decode_excluded.tsv",
        {**meta.data, "size": SIZE},
        workers=2,
    )
    return md, index


@pytest.mark.parametrize("short_videos", ["pad", "exclude"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_excludes_exactly_the_broken_videos(
    corpus: Path, tmp_path: Path, fmt: str, short_videos: str
) -> None:
    meta = write_metadata(fmt, corpus, tmp_path / "meta", short_videos)
    _, index = _run(meta, tmp_path / "out")
    check_exclusions(meta, tmp_path / "out/excluded.tsv", tmp_path / "out/decode_excluded.tsv")
    assert real_paths(index["path"]) == usable_files(meta, corpus)
    assert len(index) == len(GOOD) - (short_videos == "exclude")
    # Labels: fake is positive in every format (0/1 files: 1 = fake), as written in label_name.
    names = {Path(os.path.realpath(p)).parent.name for p in index["path"]}
    assert names == {"real", "fake"}
    for path, label in zip(index["path"], index["label"], strict=True):
        assert label == int(Path(os.path.realpath(path)).parent.name == "fake"), path
    # Groups: the table's group column, FVC's cascade_id, else one group per video.
    if fmt in ("csv", "tsv", "parquet", "fvc"):
        assert set(index["group"]) == {c.group for c in GOOD}
    else:
        assert index["group"].tolist() == index["video_id"].tolist()
    clips = np.load(tmp_path / "out/clips.npy", mmap_mode="r")
    assert clips.shape == (len(index), NUM_FRAMES, SIZE, SIZE, 3)
    assert all(clips[i].max() > 0 for i in range(len(index)))  # no blank clip slipped in
    padded = {Path(p).name for p, f in zip(index["path"], index["padded"], strict=True) if f}
    assert padded == ({"one_frame.mp4"} if short_videos == "pad" else set())


@pytest.mark.parametrize("fmt", FORMATS)
def test_same_file_with_two_labels_is_an_error_naming_both_rows(
    corpus: Path, tmp_path: Path, fmt: str
) -> None:
    meta = write_metadata(fmt, corpus, tmp_path / "meta")
    path, first, second = add_conflict(fmt, meta, corpus)
    try:
        with pytest.raises(DataError) as err:
            load_metadata(meta.data, path, tmp_path / "md.parquet", tmp_path / "x.tsv", 2)
    finally:
        for link in corpus.glob("*/zz_conflict.mp4"):
            link.unlink()
    msg = str(err.value)
    assert f"rows {first} and {second} list the same video" in msg, msg
    assert "h264.mp4" in msg and "with different labels (" in msg
    assert "\n" not in msg
    assert not (tmp_path / "md.parquet").exists() and not (tmp_path / "x.tsv").exists()


EXPECTED_STREAMS = {
    # name: (codec, width, height, frames)
    "h264.mp4": ("h264", 64, 48, 30),
    "hevc.mkv": ("hevc", 64, 48, 20),
    "vp9.webm": ("vp9", 64, 48, 20),
    "mpeg4.avi": ("mpeg4", 97, 61, 30),
    "mjpeg.mov": ("mjpeg", 97, 61, 30),
    "odd_97x61.mp4": ("h264", 97, 61, 30),
    "hd_1080p.mp4": ("h264", 1920, 1080, 6),
    "long_5000.mp4": ("h264", 16, 16, 5000),
    "rotated.mp4": ("h264", 64, 48, 30),
    "gray.mp4": ("h264", 64, 48, 30),
    "vfr.mp4": ("h264", 64, 48, 12),
    "ffv1_gray.mkv": ("ffv1", 97, 61, 30),
    "faststart.mp4": ("h264", 64, 48, 30),
    "one_frame.mp4": ("h264", 64, 48, 1),
}


@pytest.mark.parametrize("case", GOOD, ids=[c.name for c in GOOD])
def test_every_good_kind_is_probed_and_decodes_the_sampled_frames(corpus: Path, case: Case) -> None:
    path = corpus / case.rel
    info = probe_video(path)
    assert (info["codec"], info["width"], info["height"], info["frames"]) == EXPECTED_STREAMS[
        case.name
    ]
    assert info["rotation"] == (90 if case.name == "rotated.mp4" else 0)
    clip, padded = decode_clip(path, NUM_FRAMES, SIZE, frames_hint=info["frames"])
    assert clip.shape == (NUM_FRAMES, SIZE, SIZE, 3) and padded == (info["frames"] < NUM_FRAMES)
    want = [i % VALUE_PERIOD for i in sample_indices(info["frames"], NUM_FRAMES).tolist()]
    if case.name == "rotated.mp4":  # portrait, marker now bottom-left: read the top half
        levels = [float(f[SIZE // 4, SIZE // 2].mean()) for f in clip]
    else:
        levels = [float(f[SIZE // 2, SIZE - 3].mean()) for f in clip]
    if case.name == "gray.mp4":
        # x264 stores PyAV's full-range gray input as limited-range luma, so levels are
        # stretched on decoding: check the frames' order by brightness instead of levels.
        assert np.argsort(levels).tolist() == np.argsort(want).tolist(), (levels, want)
    else:
        got = [frame_index(v) for v in levels]
        assert got == want, (case.name, got, want)
    if "gray" in case.name:
        assert np.array_equal(clip[..., 0], clip[..., 1])
        assert np.array_equal(clip[..., 1], clip[..., 2])


def test_broken_kinds_cover_the_issue_list() -> None:
    """Guard the corpus itself: every kind of breakage the corpus promises is present."""
    reasons = {c.reason for c in BROKEN}
    assert {
        "missing file",
        "empty file",
        "not a video",
        "no video stream",
        "undecodable",
        "truncated",
    } <= reasons
    assert {c.stage for c in BROKEN} == {"probe", "decode"}
    assert any(c.short for c in GOOD)
