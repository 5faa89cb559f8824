"""fvc.video: probing, uniform sampling, letterbox, rotation, padding, seeking, broken files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import fvc.video as video
from fvc.video import VideoError, decode_clip, probe_video, sample_indices
from tests.conftest import VALUE_PERIOD, frame_index, write_video


@pytest.fixture(scope="module")
def clips_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("video")


def _indices(clip: np.ndarray) -> list[int]:
    """Frame index of each decoded frame, read from the grey level right of the red marker."""
    s = clip.shape[1]
    return [frame_index(f[s // 2, s - 3].mean()) for f in clip]


def test_probe_reports_stream_facts(clips_dir: Path) -> None:
    path = write_video(clips_dir / "p.mp4", frames=30, w=64, h=48, fps=25)
    info = probe_video(path)
    assert info["frames"] == 30
    assert info["fps"] == pytest.approx(25.0)
    assert (info["width"], info["height"]) == (64, 48)
    assert info["codec"] == "h264"
    assert info["duration"] == pytest.approx(30 / 25, abs=0.05)
    assert info["rotation"] == 0


@pytest.mark.parametrize(("ext", "codec"), [("mkv", "h264"), ("webm", "vp9"), ("avi", "mpeg4")])
def test_probe_counts_packets_when_container_has_no_count(
    clips_dir: Path, ext: str, codec: str
) -> None:
    path = write_video(clips_dir / f"c.{ext}", frames=20, codec=codec)
    info = probe_video(path)
    assert info["frames"] == 20
    assert info["codec"] == codec
    clip, padded = decode_clip(path, 4, 16)
    assert clip.shape == (4, 16, 16, 3) and not padded


def test_sample_indices_are_uniform_and_repeat_when_short() -> None:
    assert sample_indices(80, 8).tolist() == [5, 15, 25, 35, 45, 55, 65, 75]
    assert sample_indices(5, 8).tolist() == [0, 0, 1, 2, 2, 3, 4, 4]
    with pytest.raises(ValueError):
        sample_indices(0, 8)


def test_decode_samples_the_right_frames_and_letterboxes(clips_dir: Path) -> None:
    path = write_video(clips_dir / "wide.mp4", frames=40, w=64, h=48)
    clip, padded = decode_clip(path, 8, 32)
    assert clip.dtype == np.uint8 and clip.shape == (8, 32, 32, 3)
    assert not padded
    assert _indices(clip) == [i % VALUE_PERIOD for i in sample_indices(40, 8).tolist()]
    # 64x48 -> 32x24 centred: 4 black rows above and below, content in between.
    assert clip[:, :4].max() == 0 and clip[:, 28:].max() == 0
    assert clip[:, 4:28].max(axis=3).min() > 20  # every content pixel lit
    # The red marker stays in the top-left quadrant of the picture.
    assert tuple(clip[0, 8, 4]) == pytest.approx((255, 0, 0), abs=40)


def test_rotation_metadata_is_applied(clips_dir: Path) -> None:
    path = write_video(clips_dir / "rot.mp4", frames=10, w=64, h=48, rotation=90)
    assert probe_video(path)["rotation"] == 90
    clip, _ = decode_clip(path, 2, 32)
    # Displayed 90 degrees counter-clockwise: portrait 24x32, black bars left and right,
    # and the stored top-left (red) corner is now bottom-left.
    assert clip[:, :, :4].max() == 0 and clip[:, :, 28:].max() == 0
    assert tuple(clip[0, 28, 6]) == pytest.approx((255, 0, 0), abs=40)
    assert tuple(clip[0, 4, 6]) != pytest.approx((255, 0, 0), abs=40)


def test_short_video_is_padded_or_excluded(clips_dir: Path) -> None:
    path = write_video(clips_dir / "short.mp4", frames=5)
    clip, padded = decode_clip(path, 8, 16)
    assert padded and clip.shape == (8, 16, 16, 3)
    assert _indices(clip) == [0, 0, 1, 2, 2, 3, 4, 4]
    with pytest.raises(VideoError, match="too short: 5 frames"):
        decode_clip(path, 8, 16, short_videos="exclude")


def test_seeking_gives_the_same_frames_as_sequential_decoding(
    clips_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_video(clips_dir / "long.mp4", frames=400, gop_size=16)
    calls: list[Any] = []
    real_seek = video._decode_seeking
    monkeypatch.setattr(video, "_decode_seeking", lambda *a: calls.append(1) or real_seek(*a))
    seeked, _ = decode_clip(path, 4, 32, frames_hint=400)
    assert calls, "a 400-frame video with 4 samples should take the seeking path"
    monkeypatch.setattr(video, "SEEK_MIN_FRAMES", 10**9)
    sequential, _ = decode_clip(path, 4, 32, frames_hint=400)
    assert np.array_equal(seeked, sequential)
    assert _indices(seeked) == [i % VALUE_PERIOD for i in sample_indices(400, 4).tolist()]


@pytest.mark.parametrize(
    "kind",
    [
        "missing",
        "empty",
        "random",
        "text",
        "truncated",
        "truncated_faststart",
        "truncated_mkv",
        "still_image",
        "audio_only",
    ],
)
def test_probe_rejects_broken_files(broken_videos: dict[str, dict[str, Any]], kind: str) -> None:
    case = broken_videos[kind]
    with pytest.raises(VideoError) as err:
        probe_video(case["path"])
    assert err.value.reason.startswith(case["reason"]), err.value.reason
    assert "\n" not in err.value.reason
    assert str(case["path"]) in str(err.value)


def test_truncated_faststart_reports_frame_counts(broken_videos: dict[str, dict[str, Any]]) -> None:
    path = broken_videos["truncated_faststart"]["path"]
    with pytest.raises(VideoError, match=r"truncated: \d+ of 300 frames"):
        probe_video(path)
    # Decoding with the promised frame count fails (cut packet) or stops early: never padded.
    with pytest.raises(VideoError, match=r"truncated|undecodable"):
        decode_clip(path, 8, 16, frames_hint=300)


def test_decoding_that_ends_early_is_reported_as_truncated(clips_dir: Path) -> None:
    path = write_video(clips_dir / "ends_early.mp4", frames=30)
    with pytest.raises(VideoError, match="truncated: decoded 30 of 60 frames"):
        decode_clip(path, 8, 16, frames_hint=60)


def test_bitflipped_file_fails_while_decoding(broken_videos: dict[str, dict[str, Any]]) -> None:
    path = broken_videos["bitflip"]["path"]
    assert probe_video(path)["frames"] == 300  # container and first frame look fine
    with pytest.raises(VideoError, match="undecodable"):
        decode_clip(path, 8, 16, frames_hint=300)


def _raise_video_error() -> None:
    raise VideoError("/x.mp4", "empty file")


def test_video_error_crosses_a_process_boundary() -> None:
    """Decoder workers raise VideoError in another process: path and reason must arrive intact."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    fork = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(1, mp_context=fork) as pool, pytest.raises(VideoError) as info:
        pool.submit(_raise_video_error).result()
    err = info.value
    assert (err.path, err.reason, str(err)) == ("/x.mp4", "empty file", "/x.mp4: empty file")


def test_reasons_carry_ffmpegs_own_explanation(broken_videos: dict[str, dict[str, Any]]) -> None:
    """A cut non-faststart MP4 says why it is undecodable; junk is 'not a video'."""
    for _ in range(2):  # the same FFmpeg message twice in a row is not swallowed as a repeat
        with pytest.raises(VideoError, match=r"undecodable: .*\(moov atom not found\)"):
            probe_video(broken_videos["truncated"]["path"])
    with pytest.raises(VideoError, match="not a video: no known container format"):
        probe_video(broken_videos["random"]["path"])
    with pytest.raises(VideoError, match="not a video: FFmpeg reads it as 'jpeg_pipe'"):
        probe_video(broken_videos["still_image"]["path"])
    with pytest.raises(VideoError, match=r"truncated: frames cover [\d.]+ of 12.00 s"):
        probe_video(broken_videos["truncated_mkv"]["path"])


def test_text_file_is_not_taken_for_an_ansi_art_video(tmp_path: Path) -> None:
    """FFmpeg's tty demuxer 'opens' any text file as a video; it must not be used as one."""
    path = tmp_path / "notes.txt"
    path.write_text("hello\n" * 100)
    with pytest.raises(VideoError, match="not a video: FFmpeg reads it as 'tty'"):
        probe_video(path)


def test_ffmpeg_logging_is_restored_and_quiet(
    broken_videos: dict[str, dict[str, Any]], capfd: pytest.CaptureFixture[str]
) -> None:
    """Capturing FFmpeg's reasons neither leaks its log level nor prints to the terminal."""
    import av.logging

    before = (av.logging.get_level(), av.logging.get_skip_repeated())
    for kind in ("truncated", "random", "bitflip"):
        with pytest.raises(VideoError):
            decode_clip(broken_videos[kind]["path"], 8, 16)
    assert (av.logging.get_level(), av.logging.get_skip_repeated()) == before
    out, err = capfd.readouterr()
    assert "moov" not in out + err and "NAL" not in out + err


def test_unknown_frame_count_is_counted_and_long_mkv_is_not_truncated(clips_dir: Path) -> None:
    """Matroska stores no frame count: the demuxed packets give it, and an intact file whose
    packets cover the declared duration is not mistaken for a truncated one."""
    path = write_video(clips_dir / "full.mkv", frames=300, fps=30)
    info = probe_video(path)
    assert info["frames"] == 300
    assert info["duration"] == pytest.approx(10.0, abs=0.05)
