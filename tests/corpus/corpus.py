"""A small real-world-like corpus built on the fly with PyAV, and its metadata in every format.

The corpus lives in one folder per class (``root/real``, ``root/fake``) so that the ``folders``
format reads the very same files as the tables. It holds good videos of many kinds (codecs,
containers, odd and large sizes, 1 and 5000 frames, rotation, grayscale, variable frame rate)
and broken files of every kind the data layer must recognise. :data:`CASES` says, for every
file, where the workflow must exclude it (``probe`` -> excluded.tsv, ``decode`` ->
decode_excluded.tsv) and with which reason, so tests compare whole lists, not samples.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from fvc.formats import VIDEO_EXTENSIONS
from tests.conftest import write_audio_only, write_bitflipped, write_video

#: Frames sampled per clip in the corpus runs: the 1-frame video is shorter than this.
NUM_FRAMES = 4
#: Timestamps (ms) of the variable frame rate video: bursts and gaps, 12 frames in 1.4 s.
VFR_PTS_MS = [0, 40, 80, 200, 210, 220, 500, 540, 1000, 1010, 1020, 1400]


@dataclass(frozen=True)
class Case:
    """One corpus file: ``name`` under ``root/<label>/``, its group, and what must happen.

    ``stage`` is ``ok`` (reaches the splits), ``probe`` (listed in excluded.tsv) or ``decode``
    (listed in decode_excluded.tsv); ``reason`` is the expected reason prefix and ``detail`` a
    text the reason must also contain. ``short`` marks the video that only
    ``short_videos: exclude`` rejects (as ``decode``/``too short``). ``in_folders`` is False
    for files whose extension the ``folders`` format does not list (text, images).
    """

    name: str
    label: str
    group: str
    stage: str = "ok"
    reason: str = ""
    detail: str = ""
    short: bool = False
    make: dict[str, Any] = field(default_factory=dict)
    in_folders: bool = True  # False: the folders format ignores its extension

    @property
    def rel(self) -> str:
        return f"{self.label}/{self.name}"

    @property
    def stem(self) -> str:
        return Path(self.name).stem


GOOD = [
    Case("h264.mp4", "real", "c1", make={"frames": 30}),
    Case("hevc.mkv", "fake", "c1", make={"codec": "hevc", "frames": 20}),
    Case("vp9.webm", "real", "c2", make={"codec": "vp9", "frames": 20}),
    Case("mpeg4.avi", "fake", "c2", make={"codec": "mpeg4", "w": 97, "h": 61}),
    Case(
        "mjpeg.mov", "real", "c3", make={"codec": "mjpeg", "w": 97, "h": 61, "pix_fmt": "yuvj420p"}
    ),
    Case("odd_97x61.mp4", "fake", "c3", make={"w": 97, "h": 61, "pix_fmt": "yuv444p"}),
    Case("hd_1080p.mp4", "real", "c4", make={"w": 1920, "h": 1080, "frames": 6}),
    Case("long_5000.mp4", "fake", "c4", make={"w": 16, "h": 16, "frames": 5000, "gop_size": 50}),
    Case("rotated.mp4", "real", "c5", make={"rotation": 90}),
    Case("gray.mp4", "fake", "c5", make={"pix_fmt": "gray"}),
    Case("vfr.mp4", "real", "c6", make={"frames": 12, "pts_ms": VFR_PTS_MS}),
    Case(
        "ffv1_gray.mkv", "fake", "c6", make={"codec": "ffv1", "w": 97, "h": 61, "pix_fmt": "gray"}
    ),
    Case("faststart.mp4", "real", "c7", make={"faststart": True}),
    Case("one_frame.mp4", "fake", "c7", short=True, make={"frames": 1}),
]

BROKEN = [
    Case("missing.mp4", "real", "b1", "probe", "missing file"),
    Case("empty.mp4", "fake", "b1", "probe", "empty file"),
    Case("random.mp4", "real", "b2", "probe", "not a video", "no known container format"),
    Case("notes.avi", "fake", "b2", "probe", "not a video"),
    Case("readme.txt", "real", "b6", "probe", "not a video", "'tty'", in_folders=False),
    Case("photo.jpg", "fake", "b6", "probe", "not a video", "_pipe", in_folders=False),
    Case("audio_only.mp4", "real", "b3", "probe", "no video stream"),
    Case("truncated_moov.mp4", "fake", "b3", "probe", "undecodable", "moov atom not found"),
    Case("truncated_faststart.mp4", "real", "b4", "probe", "truncated", "of 300 frames"),
    Case("truncated_mkv.mkv", "fake", "b4", "probe", "truncated", "frames cover"),
    Case("bitflip.mp4", "real", "b5", "decode", "undecodable"),
]
CASES = GOOD + BROKEN
#: The duplicate row repeats the first good video (same label): excluded as "duplicate of row 1".
DUPLICATE_OF = GOOD[0]
#: Link in the duplicate's class folder, so the folders format lists the same video twice.
DUPLICATE_LINK = "h264_link.mp4"


def build_corpus(root: Path) -> Path:
    """Write every :data:`CASES` file under ``root/<label>/`` (about 2 s) and return ``root``."""
    for case in GOOD:
        write_video(root / case.rel, **case.make)
    scratch = root.parent / f"{root.name}_scratch"
    scratch.mkdir(exist_ok=True)
    plain = write_video(scratch / "plain.mp4", frames=300)
    fast = write_video(scratch / "fast.mp4", frames=300, faststart=True)
    mkv = write_video(scratch / "plain.mkv", frames=300)
    files = {c.name: root / c.rel for c in BROKEN}
    for path in files.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    files["missing.mp4"].symlink_to(root / "nowhere.mp4")  # dangling: folders lists it too
    files["empty.mp4"].write_bytes(b"")
    files["random.mp4"].write_bytes(np.random.default_rng(1).bytes(5000))
    files["notes.avi"].write_text("this is not a video\n" * 50)
    files["readme.txt"].write_text("this is not a video\n" * 50)
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(files["photo.jpg"])
    write_audio_only(files["audio_only.mp4"])
    for src, name in (
        (plain, "truncated_moov.mp4"),
        (fast, "truncated_faststart.mp4"),
        (mkv, "truncated_mkv.mkv"),
    ):
        data = src.read_bytes()
        files[name].write_bytes(data[: len(data) // 2])
    write_bitflipped(plain, files["bitflip.mp4"])
    (root / DUPLICATE_OF.label / DUPLICATE_LINK).symlink_to(DUPLICATE_OF.name)
    return root


@dataclass
class Metadata:
    """One metadata source for the corpus and the data config it needs.

    ``expected`` maps each excluded row to ``(case name, stage, reason prefix, detail)``; any
    row not in it must reach the splits. ``rows`` maps every row to its case name.
    """

    path: Path
    data: dict[str, Any]
    rows: dict[int, str]
    expected: dict[int, tuple[str, str, str, str]]


def _expected(rows: dict[int, str], dup_row: int, first_row: int, short: str) -> dict:
    by_name = {c.name: c for c in CASES}
    out = {}
    for row, name in rows.items():
        if row == dup_row:
            out[row] = (name, "probe", f"duplicate of row {first_row}", "")
            continue
        case = by_name[name]
        if case.stage != "ok":
            out[row] = (name, case.stage, case.reason, case.detail)
        elif case.short and short == "exclude":
            out[row] = (name, "decode", "too short", f"num_frames={NUM_FRAMES}")
    return out


def write_metadata(fmt: str, root: Path, dest: Path, short_videos: str = "pad") -> Metadata:
    """Metadata for the corpus at ``root`` in ``fmt`` (csv, tsv, parquet, fvc, list, folders).

    Each format is written the way its users write it: the TSV has upper-case labels, the
    Parquet 0/1 labels and its group in a ``source`` column, the FVC.csv maps URLs to files
    with a wildcard pattern (downloaders choose the extension), the list uses 0/1 labels.
    """
    dest.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {
        "root": str(root),
        "num_frames": NUM_FRAMES,
        "short_videos": short_videos,
        "positive_label": "fake",
        "group_column": "group",
    }
    listed = [*CASES, DUPLICATE_OF]
    rows = {i: c.name for i, c in enumerate(listed, 1)}
    dup_row, first_row = len(listed), 1
    table = pd.DataFrame(
        {
            "path": [c.rel for c in listed],
            "label": [c.label for c in listed],
            "group": [c.group for c in listed],
        }
    )
    if fmt == "csv":
        path = dest / "metadata.csv"
        table.to_csv(path, index=False)
    elif fmt == "tsv":
        path = dest / "metadata.tsv"
        table.assign(label=table["label"].str.upper()).to_csv(path, sep="\t", index=False)
    elif fmt == "parquet":
        path = dest / "metadata.parquet"
        out = table.rename(columns={"group": "source"})
        out["label"] = (out["label"] == "fake").astype("int64")
        out.to_parquet(path, index=False)
        data["group_column"] = "source"
    elif fmt == "fvc":
        path = dest / "FVC.csv"
        pd.DataFrame(
            {
                "cascade_id": [c.group for c in listed],
                "video_url": [f"https://www.youtube.com/watch?v={c.stem}" for c in listed],
                "label": [c.label for c in listed],
            }
        ).to_csv(path, index=False)
        data["fvc_filename"] = "*/{url_id}.*"
    elif fmt == "list":
        path = dest / "train_list.txt"
        lines = ["# path label (1 = fake)"]
        lines += [f"{c.rel} {int(c.label == 'fake')}" for c in listed]
        path.write_text("\n".join(lines) + "\n")
        rows = {i + 1: name for i, name in rows.items()}  # line numbers: the comment is line 1
        dup_row, first_row = dup_row + 1, 2
    elif fmt == "folders":
        path = root
        data.pop("root")
        names = folder_listing(root)
        rows = {i: n for i, n in enumerate(names, 1)}
        dup_row = names.index(DUPLICATE_LINK) + 1
        first_row = names.index(DUPLICATE_OF.name) + 1
        rows[dup_row] = DUPLICATE_OF.name
    else:
        raise ValueError(f"unknown format {fmt!r}")
    return Metadata(path, data, rows, _expected(rows, dup_row, first_row, short_videos))


FORMATS = ("csv", "tsv", "parquet", "fvc", "list", "folders")


def folder_listing(root: Path) -> list[str]:
    """File names in the order the folders format lists them (class folders sorted, videos)."""
    return [
        f.name
        for sub in ("fake", "real")
        for f in sorted((root / sub).iterdir())
        if f.suffix.lower() in VIDEO_EXTENSIONS
    ]


def add_conflict(fmt: str, meta: Metadata, root: Path) -> tuple[Path, int, int]:
    """Make ``meta`` list the first good video a second time with the other label.

    Returns (metadata path, first row, conflicting row) so tests can check both are named.
    """
    case, other = DUPLICATE_OF, "fake" if DUPLICATE_OF.label == "real" else "real"
    path = meta.path
    if fmt == "folders":
        link = root / other / "zz_conflict.mp4"
        link.symlink_to(os.path.relpath(root / case.rel, link.parent))
        names = folder_listing(root)
        a, b = sorted((names.index(case.name) + 1, names.index(link.name) + 1))
        return path, a, b
    if fmt == "list":
        lines = path.read_text().splitlines()
        lines.append(f"{case.rel} {int(other == 'fake')}")
        path.write_text("\n".join(lines) + "\n")
        return path, 2, len(lines)
    if fmt == "parquet":
        df = pd.read_parquet(path)
        df.loc[len(df)] = [case.rel, int(other == "fake"), case.group]
        df.to_parquet(path, index=False)
        return path, 1, len(df)
    sep = "\t" if fmt == "tsv" else ","
    df = pd.read_csv(path, sep=sep, dtype=str)
    if fmt == "fvc":
        df.loc[len(df)] = [case.group, f"https://youtu.be/{case.stem}", other]
    else:
        df.loc[len(df)] = [case.rel, other, case.group]
    df.to_csv(path, sep=sep, index=False)
    return path, 1, len(df)
