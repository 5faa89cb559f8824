"""A small, offline, deterministic real/fake video dataset for demos and tests.

No download is possible on the target machines, so clips are synthesised from the two
photographs shipped with scikit-learn (``load_sample_images``):

- **real**: a smooth virtual camera (pan + zoom) over a crop of one photograph. Each source id
  has its own photograph crop, flip and colour cast; consecutive frames differ only by the
  smooth motion, so real clips are temporally smooth.
- **fake**: the same kind of camera motion with a manipulated region blended in, like a crude
  face swap: an elliptical patch (a blurred, colour-shifted crop of the *other* photograph)
  covering about a third of the frame, with per-frame flicker (brightness and position jitter)
  and temporal noise that real clips lack.
- **difficulty**: each fake clip draws its own artefact strength ``s`` (see :data:`STRENGTH`,
  :data:`SUBTLE`); the patch is blended in with opacity ``s``, so most fakes are obvious and
  about a third are close to invisible after H.264 and downscaling. Real clips get a
  mild global exposure flicker and sensor noise, so "something flickers" alone is no cue.

Tuned so that the default demo (small3d, 5 folds, 5 epochs) lands around 0.85-0.97 mean
ROC-AUC with visible fold-to-fold spread (measured: 0.90 mean, folds 0.85-1.00), so a run can
show a regression. Same config and seed give the same videos.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pandas as pd
from PIL import Image, ImageFilter

from fvc.config import DemoConfig
from fvc.io import atomic_path, write_text

log = logging.getLogger(__name__)

#: Side of the camera window relative to the output size (in the downscaled photograph):
#: about 1:1 sampling, so textures do not alias (alias shimmer would make real clips flicker).
WINDOW_SCALE = (1.05, 1.3)
#: Largest camera pan over a whole clip, as a fraction of the output size: slow motion keeps
#: frame-to-frame differences of real clips small, so the fake flicker stands out.
MAX_PAN = 0.12
#: Largest relative zoom change over a clip.
MAX_ZOOM = 0.06
#: Brightness jitter of the fake patch, grey levels (uniform in +-FLICKER), plus a per-channel
#: colour jitter of +-COLOR_FLICKER.
FLICKER = 40.0
COLOR_FLICKER = 10.0
#: Position jitter of the fake patch, pixels (uniform in +-JITTER per frame).
JITTER = 3.0
#: Per-pixel temporal noise inside the fake patch (std, grey levels): re-rendered every frame,
#: like an unstable blending; real clips have none.
PATCH_NOISE = 14.0
#: Side of the fake patch relative to the frame (ellipse area ~ 0.75 x side^2).
PATCH_SIDE = (0.6, 0.72)
#: Artefact strength of a fake clip (opacity of the patch): most fakes draw it uniformly from
#: STRENGTH, which a small 3D CNN learns within a few epochs; a share (data.demo.subtle_share) from
#: SUBTLE, which is close to invisible. The subtle ones keep the folds below a perfect score, and
#: their count per fold varies, which gives the folds their spread.
STRENGTH = (0.6, 1.0)
SUBTLE = (0.03, 0.25)
#: Global exposure flicker (grey levels, uniform in +-) and sensor noise (std) of every clip.
GLOBAL_FLICKER = 3.0
SENSOR_NOISE = 2.0


def _photographs() -> list[np.ndarray]:
    """The two scikit-learn sample photographs (427 x 640 RGB uint8), shipped with the package."""
    from sklearn.datasets import load_sample_images

    return [np.asarray(img) for img in load_sample_images().images]


def _resize(img: np.ndarray, width: int, height: int, blur: float = 0.0) -> np.ndarray:
    """Antialiased resize (and optional Gaussian blur) with Pillow; returns float32 RGB."""
    pil = Image.fromarray(img).resize((width, height), Image.Resampling.LANCZOS)
    if blur > 0:
        pil = pil.filter(ImageFilter.GaussianBlur(blur))
    return np.asarray(pil, dtype=np.float32)


def _bilinear(img: np.ndarray, cx: float, cy: float, side: float, size: int) -> np.ndarray:
    """Sample a ``side``-pixel square window centred at (cx, cy) of ``img`` into size x size."""
    h, w = img.shape[:2]
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size * side - side / 2
    xs = np.clip(cx + coords, 0, w - 1.001)
    ys = np.clip(cy + coords, 0, h - 1.001)
    x0, y0 = xs.astype(np.int64), ys.astype(np.int64)
    fx, fy = (xs - x0)[None, :, None], (ys - y0)[:, None, None]
    top = img[y0][:, x0] * (1 - fx) + img[y0][:, x0 + 1] * fx
    bottom = img[y0 + 1][:, x0] * (1 - fx) + img[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _source_image(photo: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """One source's view: a random crop of a photograph, flipped/colour-cast, scaled ~1:1."""
    h, w = photo.shape[:2]
    crop_h = int(rng.uniform(0.55, 0.9) * h)
    crop_w = min(w, int(crop_h * rng.uniform(1.0, 1.5)))
    y0 = int(rng.integers(0, h - crop_h + 1))
    x0 = int(rng.integers(0, w - crop_w + 1))
    crop = photo[y0 : y0 + crop_h, x0 : x0 + crop_w]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    # Downscale so the camera window (~1.05-1.35 x size) covers a large part of the crop.
    scale = size * 2.2 / min(crop_h, crop_w)
    img = _resize(np.ascontiguousarray(crop), round(crop_w * scale), round(crop_h * scale))
    gain = rng.uniform(0.8, 1.2, size=3).astype(np.float32)
    offset = rng.uniform(-15, 15, size=3).astype(np.float32)
    return np.clip(img * gain + offset, 0, 255)


def _camera_path(
    img: np.ndarray, rng: np.random.Generator, size: int, frames: int
) -> Iterator[tuple[float, float, float]]:
    """Smooth (eased) pan and zoom: window centre and side per frame."""
    h, w = img.shape[:2]
    s0 = rng.uniform(*WINDOW_SCALE) * size
    s1 = s0 * rng.uniform(1 - MAX_ZOOM, 1 + MAX_ZOOM)
    margin = max(s0, s1) / 2 + 1
    c0 = np.array([rng.uniform(margin, w - margin), rng.uniform(margin, h - margin)])
    angle = rng.uniform(0, 2 * np.pi)
    pan = rng.uniform(0.3, 1.0) * MAX_PAN * size * np.array([np.cos(angle), np.sin(angle)])
    c1 = np.clip(c0 + pan, margin, [w - margin, h - margin])
    for t in np.linspace(0.0, 1.0, frames):
        e = t * t * (3 - 2 * t)  # smoothstep: no jerk at the ends
        yield (c0[0] + (c1[0] - c0[0]) * e, c0[1] + (c1[1] - c0[1]) * e, s0 + (s1 - s0) * e)


def _patch(other: np.ndarray, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The swapped-in content (blurred, colour-shifted crop of the other photo) and its mask."""
    side = int(size * rng.uniform(*PATCH_SIDE))
    h, w = other.shape[:2]
    crop = int(rng.uniform(0.25, 0.5) * h)
    y0, x0 = int(rng.integers(0, h - crop)), int(rng.integers(0, w - crop))
    content = _resize(other[y0 : y0 + crop, x0 : x0 + crop], side, side, blur=1.2)
    content = np.clip(content * rng.uniform(0.7, 1.3, size=3) + rng.uniform(-30, 30), 0, 255)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    r = (side - 1) / 2
    mask = ((xx - r) / r) ** 2 + ((yy - r) / (r * rng.uniform(0.8, 1.0))) ** 2 <= 1.0
    return content.astype(np.float32), mask


def _render(
    img: np.ndarray,
    other: np.ndarray,
    rng: np.random.Generator,
    size: int,
    frames: int,
    fake: bool,
    subtle_share: float,
) -> np.ndarray:
    """Render one clip as uint8 (frames, size, size, 3)."""
    out = np.empty((frames, size, size, 3), dtype=np.uint8)
    content = mask = None
    if fake:
        strength = rng.uniform(*(SUBTLE if rng.random() < subtle_share else STRENGTH))
        content, mask = _patch(other, rng, size)
        side = mask.shape[0]
        px0, py0 = rng.uniform(0, size - side, size=2)
        px1, py1 = np.clip([px0, py0] + rng.uniform(-0.15, 0.15, size=2) * size, 0, size - side)
    for i, (cx, cy, win) in enumerate(_camera_path(img, rng, size, frames)):
        frame = _bilinear(img, cx, cy, win, size)
        if fake:
            t = i / max(1, frames - 1)
            x = int(np.clip(px0 + (px1 - px0) * t + rng.uniform(-JITTER, JITTER), 0, size - side))
            y = int(np.clip(py0 + (py1 - py0) * t + rng.uniform(-JITTER, JITTER), 0, size - side))
            shift = rng.uniform(-FLICKER, FLICKER) + rng.uniform(-1, 1, 3) * COLOR_FLICKER
            noise = rng.normal(0.0, PATCH_NOISE, size=(*content.shape[:2], 1))
            patch = content + shift.astype(np.float32) + noise.astype(np.float32)
            region = frame[y : y + side, x : x + side]
            region[mask] = (1 - strength) * region[mask] + strength * patch[mask]
        frame += rng.uniform(-GLOBAL_FLICKER, GLOBAL_FLICKER)
        frame += rng.normal(0.0, SENSOR_NOISE, size=frame.shape).astype(np.float32)
        out[i] = np.clip(frame + 0.5, 0, 255).astype(np.uint8)
    return out


def _encode(path: Path, clip: np.ndarray, fps: int = 12, gop_size: int = 8) -> None:
    """Atomically write an H.264 MP4 (yuv420p, small GOP so seeking stays cheap)."""
    with atomic_path(path) as tmp, av.open(str(tmp), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = clip.shape[2], clip.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.gop_size = gop_size
        stream.codec_context.thread_count = 1
        # "superfast": no mb-tree/lookahead, which made x264 output differ between runs here.
        stream.codec_context.options = {"preset": "superfast", "crf": "18"}
        for i, image in enumerate(clip):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i  # explicit timestamps: x264's rate control reads them (determinism)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def make_demo_dataset(
    out_csv: str | os.PathLike[str], cfg: DemoConfig | dict[str, Any]
) -> pd.DataFrame:
    """Generate the demo videos under ``<csv folder>/videos/`` and then, last, the CSV.

    ``cfg`` is ``config["data"]["demo"]``: ``sources``, ``clips_per_source``, ``frames``,
    ``size``, ``seed`` and ``subtle_share`` (schema defaults for missing keys; a value out of
    range is a :class:`fvc.config.ConfigError` naming ``data.demo.<key>``). Each source id (the
    ``group``) yields ``clips_per_source`` real and as many fake clips. The CSV (``path``
    relative to its folder, ``label`` real/fake, ``group``) is written atomically after every
    video exists, so its presence means the set is complete.
    """
    demo = DemoConfig.of(cfg)
    sources, per_source, frames = demo.sources, demo.clips_per_source, demo.frames
    size, seed, subtle_share = demo.size, demo.seed, float(demo.subtle_share)
    out_csv = Path(out_csv)
    video_dir = out_csv.parent / "videos"
    video_dir.mkdir(parents=True, exist_ok=True)
    photos = _photographs()
    rows = []
    for source in range(sources):
        rng = np.random.default_rng([seed, source])
        which = int(rng.integers(len(photos)))
        img = _source_image(photos[which], rng, size)
        other = photos[1 - which] if len(photos) > 1 else photos[which][::-1]
        group = f"s{source:03d}"
        for clip_no in range(per_source):
            for label in ("real", "fake"):
                clip_rng = np.random.default_rng([seed, source, clip_no, label == "fake"])
                clip = _render(img, other, clip_rng, size, frames, label == "fake", subtle_share)
                name = f"{group}_{label}_{clip_no}.mp4"
                _encode(video_dir / name, clip)
                rows.append({"path": f"videos/{name}", "label": label, "group": group})
    table = pd.DataFrame(rows, columns=["path", "label", "group"])
    write_text(out_csv, table.to_csv(index=False))
    log.info("demo dataset: %d clips from %d sources -> %s", len(table), sources, out_csv)
    return table
