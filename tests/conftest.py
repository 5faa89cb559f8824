"""Shared fixtures: tiny videos built on the fly with PyAV, and a set of broken video files.

Every frame ``i`` of a :func:`write_video` video is a flat grey of :func:`frame_value` ``(i)``
with a red marker in its top-left quadrant, so tests can tell which frames were sampled (the
grey level survives H.264 within a few levels) and which way up a frame is.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image

#: Test files that take longest, longest first (serial seconds measured on 2 cores). `make test`
#: runs `pytest -n 3 --dist loadfile --no-loadscope-reorder`: whole files go to the workers in
#: collection order, so these start first (the SLURM tests mostly wait on the cluster while
#: the other workers train) and the short files fill in at the end. Files not listed follow in
#: their usual order; the order changes nothing else (each test states its preconditions).
SLOWEST_FIRST = [
    "tests/slurm/test_slurm.py",  # 516
    "tests/slurm/test_arrays_requeue.py",  # 210 (+150 with FVC_SLURM_ARRAY_FAILURE=1)
    "tests/workflow/test_nested.py",  # 240
    "tests/workflow/test_sweep.py",  # 200
    "tests/workflow/test_workflow.py",  # 110 (builds the shared finished tiny run)
    "tests/corpus/test_corpus_workflow.py",  # 100
    "tests/workflow/test_dataset_changes.py",  # 81
    "tests/workflow/test_predict_workflow.py",  # 80
    "tests/workflow/test_pairing.py",  # 50
    "tests/workflow/test_results.py",  # 45
    "tests/workflow/test_pretrained_workflow.py",  # 35
    "tests/workflow/test_module.py",  # 27
    "tests/faults/test_kill_resume.py",  # 33
    "tests/workflow/test_clips_workflow.py",  # 24
    "tests/workflow/test_refit_workflow.py",  # 22
    "tests/faults/test_signals.py",  # 22
    "tests/unit/test_gpu_check.py",  # 21
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Under `pytest -n`, stop the SLURM test cluster once every worker is done.

    A worker's session ends when its own tests do; stopping the cluster there would leave the
    other worker's Snakemake runs waiting ~10 s each on ``scontrol`` (the SLURM executor plugin
    asks for the cluster's config whenever Snakemake starts and SLURM is installed).
    """
    if "PYTEST_XDIST_WORKER" in os.environ:
        return
    from tests.slurm.conftest import stop_cluster_started_by_workers

    stop_cluster_started_by_workers(session.config._tmp_path_factory.getbasetemp())


def assert_same_weights(a: dict, b: dict) -> None:
    """Two state dicts hold the same tensors, bit for bit."""
    import torch

    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def build_cache(metadata: Path, out: Path, data: dict, **kwargs: Any) -> Any:
    """``fvc.data.build_clip_cache`` into ``out/`` (clips.npy, clips.parquet, dx.tsv)."""
    from fvc.data import build_clip_cache

    return build_clip_cache(
        metadata, out / "clips.npy", out / "clips.parquet", out / "dx.tsv", data, **kwargs
    )


#: Grey levels of successive frames repeat after this many frames.
VALUE_PERIOD = 25


def frame_value(i: int) -> int:
    """Grey level of frame ``i`` of a :func:`write_video` video (40..232, step 8)."""
    return 40 + (i % VALUE_PERIOD) * 8


def frame_index(grey: float) -> int:
    """Inverse of :func:`frame_value` (modulo :data:`VALUE_PERIOD`) for a decoded grey level."""
    return round((float(grey) - 40) / 8) % VALUE_PERIOD


#: Encoder for a short codec name (anything else is passed to PyAV as the encoder name).
ENCODERS = {"h264": "libx264", "hevc": "libx265", "vp9": "libvpx-vp9", "av1": "libsvtav1"}
#: Quiet, fast settings per encoder (x265 would print its banner to the test output).
ENCODER_OPTIONS = {
    "libx264": {"preset": "ultrafast"},
    "libx265": {"preset": "ultrafast", "x265-params": "log-level=error"},
    "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8"},
}


def write_video(
    path: str | os.PathLike[str],
    frames: int = 30,
    w: int = 64,
    h: int = 48,
    codec: str = "h264",
    fps: int = 25,
    gop_size: int = 8,
    faststart: bool = False,
    rotation: int | None = None,
    pix_fmt: str = "yuv420p",
    pts_ms: list[int] | None = None,
) -> Path:
    """Encode a small test video and return its path.

    ``codec``: h264, hevc, vp9, av1, or an FFmpeg encoder name (mpeg4, mjpeg, ffv1, ...); the
    container follows the file extension. ``pix_fmt`` gray/yuv444p/yuvj420p make grayscale,
    odd-sized or MJPEG videos; ``pts_ms`` (one timestamp per frame, in ms) makes a variable
    frame rate video; ``rotation`` writes display-matrix rotation metadata.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"movflags": "faststart"} if faststart else {}
    encoder = ENCODERS.get(codec, codec)
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream(encoder, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        stream.gop_size = gop_size
        stream.codec_context.options = dict(ENCODER_OPTIONS.get(encoder, {}))
        if pts_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i in range(frames):
            img = np.full((h, w, 3), frame_value(i), dtype=np.uint8)
            img[: h // 2, : w // 2] = (255, 0, 0)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def write_audio_only(path: str | os.PathLike[str]) -> Path:
    """A valid AAC file with no video stream (``.mp4`` container)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(5):
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts = 16000, i * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def write_bitflipped(src: Path, dest: Path, flips: int = 200) -> Path:
    """A copy of ``src`` with bytes inverted all over its frame data: opens, fails to decode.

    Flips start 1000 bytes into ``mdat`` (past x264's SEI text in the first packet, so the
    first frame still decodes) and are spread so that seeking cannot skip them all.
    """
    data = bytearray(src.read_bytes())
    rng = np.random.default_rng(0)
    start = data.find(b"mdat") + 1000
    for i in rng.integers(start, len(data) - 2000, flips):
        data[i] ^= 0xFF
    dest.write_bytes(bytes(data))
    return dest


@pytest.fixture
def make_video() -> Callable[..., Path]:
    """The :func:`write_video` helper: ``make_video(path, frames, w, h, codec="h264", ...)``."""
    return write_video


@pytest.fixture(scope="session")
def broken_videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Broken files by kind: ``{"path": Path, "reason": expected reason prefix, "stage": ...}``.

    ``stage`` is where the break is detected: ``probe`` (load_metadata excludes the video) or
    ``decode`` (only decoding the frames finds it; build_clip_cache excludes it).
    """
    d = tmp_path_factory.mktemp("broken")
    good = write_video(d / "good.mp4", frames=300, w=64, h=48)
    good_fs = write_video(d / "good_faststart.mp4", frames=300, w=64, h=48, faststart=True)
    data, data_fs = good.read_bytes(), good_fs.read_bytes()
    (d / "empty.mp4").write_bytes(b"")
    (d / "random.mp4").write_bytes(np.random.default_rng(1).bytes(5000))
    (d / "text.mp4").write_text("this is not a video\n" * 50)
    (d / "truncated.mp4").write_bytes(data[: len(data) // 2])  # moov at the end: lost
    (d / "truncated_faststart.mp4").write_bytes(data_fs[: len(data_fs) // 2])
    mkv = write_video(d / "good.mkv", frames=300, w=64, h=48).read_bytes()
    (d / "truncated.mkv").write_bytes(mkv[: len(mkv) // 2])  # no frame count: duration shows it
    write_bitflipped(good, d / "bitflip.mp4")
    write_audio_only(d / "audio_only.mp4")
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(d / "still.jpg")
    probe = "probe"
    return {
        "missing": {"path": d / "missing.mp4", "reason": "missing file", "stage": probe},
        "empty": {"path": d / "empty.mp4", "reason": "empty file", "stage": probe},
        "random": {"path": d / "random.mp4", "reason": "not a video", "stage": probe},
        "text": {"path": d / "text.mp4", "reason": "not a video", "stage": probe},
        "truncated": {"path": d / "truncated.mp4", "reason": "undecodable", "stage": probe},
        "truncated_faststart": {
            "path": d / "truncated_faststart.mp4",
            "reason": "truncated",
            "stage": probe,
        },
        "truncated_mkv": {"path": d / "truncated.mkv", "reason": "truncated", "stage": probe},
        "still_image": {"path": d / "still.jpg", "reason": "not a video", "stage": probe},
        "audio_only": {"path": d / "audio_only.mp4", "reason": "no video stream", "stage": probe},
        "bitflip": {"path": d / "bitflip.mp4", "reason": "undecodable", "stage": "decode"},
    }
