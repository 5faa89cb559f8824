"""``data.resize: short_side_crop`` on really decoded videos.

The reference is torchvision's own Kinetics preset (``R3D_18_Weights.KINETICS400_V1
.transforms()``: resize to 128 x 171, centre crop 112) applied to the full-resolution frames.
The test pattern is a sinusoid of period 24 px, so a crop that is off by one pixel differs by
~7 grey levels on average while the two resamplers agree within one level.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch
from torchvision.models import video as tv_video
from torchvision.transforms.v2 import functional as F

from fvc.video import SHORT_SIDE_RATIO, decode_clip
from tests.conftest import write_video


def pattern(w: int, h: int, i: int) -> np.ndarray:
    """Frame ``i``: sinusoids across x (red, moving with i) and y (green), a ramp in blue."""
    x, y = np.arange(w)[None, :], np.arange(h)[:, None]
    img = np.empty((h, w, 3), dtype=np.uint8)
    img[..., 0] = 127.5 + 100 * np.sin(2 * np.pi * x / 24 + i)
    img[..., 1] = 127.5 + 100 * np.sin(2 * np.pi * y / 24)
    img[..., 2] = x * 255 // (w - 1)
    return img


def write_pattern_video(path: Path, w: int, h: int, frames: int = 4) -> np.ndarray:
    """A lossless (FFV1, RGB) video of :func:`pattern`; returns its frames ``(T, H, W, 3)``."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=25)
        stream.width, stream.height, stream.pix_fmt = w, h, "bgr0"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(pattern(w, h, i), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with av.open(str(path)) as container:  # what the decoder gives at full resolution
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def resize_crop(frames: np.ndarray, resize: list[int], crop: list[int]) -> np.ndarray:
    """torchvision's resize (antialiased bilinear) + center_crop of uint8 ``(T, H, W, 3)``."""
    video = torch.from_numpy(frames).permute(0, 3, 1, 2)
    out = F.center_crop(F.resize(video, resize, antialias=True), crop)
    return out.permute(0, 2, 3, 1).numpy()


def mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int64) - b.astype(np.int64)).mean())


def test_4_3_video_at_112_is_torchvisions_kinetics_preset(tmp_path: Path) -> None:
    full = write_pattern_video(tmp_path / "k.mkv", 224, 168)
    assert np.array_equal(full, np.stack([pattern(224, 168, i) for i in range(4)]))
    clip, padded = decode_clip(tmp_path / "k.mkv", 4, 112, resize="short_side_crop")
    assert clip.shape == (4, 112, 112, 3) and not padded
    preset = tv_video.R3D_18_Weights.KINETICS400_V1.transforms()
    assert list(preset.resize_size) == [128, 171] and list(preset.crop_size) == [112, 112]
    expected = resize_crop(full, list(preset.resize_size), list(preset.crop_size))
    assert mean_abs(clip, expected) < 1.0
    assert np.abs(clip.astype(int) - expected.astype(int)).max() <= 3
    # the comparison is sharp: one pixel off, or the letterbox, is far away
    assert mean_abs(clip[:, :, 1:-1], expected[:, :, 2:]) > 4
    assert mean_abs(clip[:, 1:-1], expected[:, 2:]) > 4
    letterbox, _ = decode_clip(tmp_path / "k.mkv", 4, 112)
    assert mean_abs(letterbox, expected) > 30


@pytest.mark.parametrize(("w", "h"), [(256, 144), (120, 200)])
def test_other_shapes_keep_their_aspect_and_lose_only_the_long_side(
    tmp_path: Path, w: int, h: int
) -> None:
    full = write_pattern_video(tmp_path / "v.mkv", w, h)
    size = 64
    short = round(size * SHORT_SIDE_RATIO)  # 73: the crop is 7/8 of the short side
    assert short == 73
    long = round(max(w, h) * short / min(w, h))
    resize = [short, long] if w >= h else [long, short]
    clip, _ = decode_clip(tmp_path / "v.mkv", 4, size, resize="short_side_crop")
    assert clip.shape == (4, size, size, 3)
    assert mean_abs(clip, resize_crop(full, resize, [size, size])) < 1.0
    # squeezing to 4:3 first (torchvision's fixed 128 x 171 on any video) is something else
    squeezed = [short, round(short * 4 / 3)] if w >= h else [round(short * 4 / 3), short]
    assert mean_abs(clip, resize_crop(full, squeezed, [size, size])) > 4


def test_rotated_video_is_cropped_upright_without_bars(tmp_path: Path) -> None:
    path = write_video(tmp_path / "rot.mp4", frames=10, w=64, h=48, rotation=90)
    letterbox, _ = decode_clip(path, 2, 32)
    assert letterbox[:, :, :4].max() == 0  # portrait in a square: black bars left and right
    clip, _ = decode_clip(path, 2, 32, resize="short_side_crop")
    assert clip.shape == (2, 32, 32, 3)
    assert clip.max(axis=3).min() > 20  # no black bar anywhere
    # displayed 90 degrees counter-clockwise: the stored top-left (red) quadrant is now the
    # bottom-left one, and a centred crop keeps the quadrant corner at the centre
    assert tuple(clip[0, 24, 8]) == pytest.approx((255, 0, 0), abs=40)
    assert tuple(clip[0, 8, 8]) != pytest.approx((255, 0, 0), abs=40)
    assert tuple(clip[0, 24, 24]) != pytest.approx((255, 0, 0), abs=40)


def test_unknown_resize_mode_is_an_error(tmp_path: Path) -> None:
    path = write_video(tmp_path / "a.mp4", frames=4)
    with pytest.raises(ValueError, match=r"data\.resize must be one of letterbox, short_side_crop"):
        decode_clip(path, 2, 16, resize="stretch")
