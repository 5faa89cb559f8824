"""Shared fixtures: tiny videos built on the fly with PyAV, and a set of broken video files.

Every frame ``i`` of a :func:`write_video` video is a flat grey of :func:`frame_value` ``(i)``
with a red marker in its top-left quadrant, so tests can tell which frames were sampled (the
grey level survives H.264 within a few levels) and which way up a frame is.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

#: Grey levels of successive frames repeat after this many frames.
VALUE_PERIOD = 25


def frame_value(i: int) -> int:
    """Grey level of frame ``i`` of a :func:`write_video` video (40..232, step 8)."""
    return 40 + (i % VALUE_PERIOD) * 8


def frame_index(grey: float) -> int:
    """Inverse of :func:`frame_value` (modulo :data:`VALUE_PERIOD`) for a decoded grey level."""
    return round((float(grey) - 40) / 8) % VALUE_PERIOD


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
) -> Path:
    """Encode a small test video (``codec`` h264/libx264, mpeg4, vp9, ...) and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"movflags": "faststart"} if faststart else {}
    encoder = {"h264": "libx264", "vp9": "libvpx-vp9"}.get(codec, codec)
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream(encoder, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.gop_size = gop_size
        if encoder == "libx264":
            stream.codec_context.options = {"preset": "ultrafast"}
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i in range(frames):
            img = np.full((h, w, 3), frame_value(i), dtype=np.uint8)
            img[: h // 2, : w // 2] = (255, 0, 0)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        container.mux(stream.encode(None))
    return path


@pytest.fixture
def make_video() -> Callable[..., Path]:
    """The :func:`write_video` helper: ``make_video(path, frames, w, h, codec="h264", ...)``."""
    return write_video


def _audio_only(path: Path) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(5):
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts = 16000, i * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


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
    flipped = bytearray(data)
    rng = np.random.default_rng(0)
    start = data.find(b"mdat") + 1000  # past x264's SEI text in the first packet
    for i in rng.integers(start, len(data) - 2000, 200):  # spread: seeking cannot skip it all
        flipped[i] ^= 0xFF
    (d / "bitflip.mp4").write_bytes(bytes(flipped))
    _audio_only(d / "audio_only.mp4")
    probe = "probe"
    return {
        "missing": {"path": d / "missing.mp4", "reason": "missing file", "stage": probe},
        "empty": {"path": d / "empty.mp4", "reason": "empty file", "stage": probe},
        "random": {"path": d / "random.mp4", "reason": "undecodable", "stage": probe},
        "text": {"path": d / "text.mp4", "reason": "undecodable", "stage": probe},
        "truncated": {"path": d / "truncated.mp4", "reason": "undecodable", "stage": probe},
        "truncated_faststart": {
            "path": d / "truncated_faststart.mp4",
            "reason": "truncated",
            "stage": probe,
        },
        "audio_only": {"path": d / "audio_only.mp4", "reason": "no video stream", "stage": probe},
        "bitflip": {"path": d / "bitflip.mp4", "reason": "undecodable", "stage": "decode"},
    }
