"""Incremental preprocessing: only new or changed videos are decoded again.

Each test builds real clip caches from real videos; decodes are counted by what
``build_clip_cache`` reports (``attrs`` and the log line), and the result is compared byte for
byte with a build from scratch.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from fvc.data import load_metadata
from tests.conftest import build_cache, write_bitflipped, write_video

DATA = {"positive_label": "fake", "group_column": None, "num_frames": 4, "size": 16}


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """Eight good videos (v0..v7) and one that probes fine but fails to decode (bad.mp4)."""
    for i in range(8):
        write_video(tmp_path / "videos" / f"v{i}.mp4", frames=10 + i, w=32, h=24)
    good = write_video(tmp_path / "src.mp4", frames=300, w=64, h=48)
    write_bitflipped(good, tmp_path / "videos" / "bad.mp4")
    return tmp_path


def _metadata(root: Path, names: list[str], tag: str) -> Path:
    """metadata.parquet (load_data's output) for ``names`` (alternating labels)."""
    table = pd.DataFrame(
        {
            "path": [f"videos/{n}" for n in names],
            "label": ["fake" if i % 2 else "real" for i in range(len(names))],
        }
    )
    table.to_csv(root / f"{tag}.csv", index=False)
    out = root / tag / "metadata.parquet"
    load_metadata(DATA, root / f"{tag}.csv", out, root / tag / "excluded.tsv", 1)
    return out


def _build(md: Path, out: Path, cache: Path | None, **cfg: Any) -> pd.DataFrame:
    return build_cache(md, out, {**DATA, **cfg}, workers=2, cache_dir=cache)


def _same_outputs(a: Path, b: Path) -> None:
    assert (a / "clips.npy").read_bytes() == (b / "clips.npy").read_bytes()
    pd.testing.assert_frame_equal(
        pd.read_parquet(a / "clips.parquet"), pd.read_parquet(b / "clips.parquet")
    )
    assert (a / "dx.tsv").read_text() == (b / "dx.tsv").read_text()


def test_adding_one_video_decodes_one(dataset: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = dataset / "cache"
    names = [f"v{i}.mp4" for i in range(6)] + ["bad.mp4", "v6.mp4"]
    first = _build(_metadata(dataset, names, "n"), dataset / "run1", cache)
    assert first.attrs == {"decoded": 8, "reused": 0}
    assert len(first) == 7  # bad.mp4 fails to decode
    # N + 1: only v7 is decoded; the failure of bad.mp4 is remembered, not decoded again.
    md = _metadata(dataset, [*names, "v7.mp4"], "n1")
    with caplog.at_level(logging.INFO, logger="fvc.data"):
        second = _build(md, dataset / "run2", cache)
    assert second.attrs == {"decoded": 1, "reused": 8}
    assert "decoded 1 video(s), reused 8" in caplog.text
    assert "decode: 1 videos" in caplog.text  # the decoder pool saw one task
    _build(md, dataset / "scratch", None)
    _same_outputs(dataset / "run2", dataset / "scratch")
    # The cache is a hard link to the last clips.npy, not a second copy.
    arrays = list(cache.glob("clips-*.npy"))
    assert len(arrays) == 1
    assert arrays[0].stat().st_ino == (dataset / "run2/clips.npy").stat().st_ino


def test_removed_and_modified_videos(dataset: Path) -> None:
    cache = dataset / "cache"
    names = [f"v{i}.mp4" for i in range(8)]
    _build(_metadata(dataset, names, "all"), dataset / "run1", cache)
    # v0 removed from the metadata; v3 replaced by another video under the same name.
    shutil.copy(dataset / "videos/v7.mp4", dataset / "videos/v3.mp4")
    md = _metadata(dataset, [*names[1:], "bad.mp4"], "changed")
    index = _build(md, dataset / "run2", cache)
    assert index.attrs == {"decoded": 2, "reused": 6}  # v3 and bad.mp4
    _build(md, dataset / "scratch", None)
    _same_outputs(dataset / "run2", dataset / "scratch")
    # Only the modification time changes (same bytes): decoded again, since identity is a stat.
    st = os.stat(dataset / "videos/v5.mp4")
    os.utime(dataset / "videos/v5.mp4", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert _build(md, dataset / "run3", cache).attrs == {"decoded": 1, "reused": 7}
    # Nothing changed: nothing decoded.
    assert _build(md, dataset / "run4", cache).attrs == {"decoded": 0, "reused": 8}
    _same_outputs(dataset / "run4", dataset / "scratch")


def test_changed_decode_setting_decodes_everything(dataset: Path) -> None:
    cache = dataset / "cache"
    md = _metadata(dataset, [f"v{i}.mp4" for i in range(6)], "six")
    _build(md, dataset / "run1", cache)
    for cfg in ({"size": 24}, {"num_frames": 5}, {"short_videos": "exclude"}):
        index = _build(md, dataset / "run2", cache, **cfg)
        assert index.attrs == {"decoded": 6, "reused": 0}, cfg
        _build(md, dataset / "scratch", None, **cfg)
        _same_outputs(dataset / "run2", dataset / "scratch")


@pytest.mark.parametrize("damage", ["index", "array", "missing_array"])
def test_damaged_cache_only_costs_time(dataset: Path, damage: str) -> None:
    cache = dataset / "cache"
    md = _metadata(dataset, [f"v{i}.mp4" for i in range(6)], "six")
    _build(md, dataset / "run1", cache)
    (array,) = cache.glob("clips-*.npy")
    if damage == "index":
        (cache / "index.parquet").write_bytes(b"not parquet")
    elif damage == "array":
        array.unlink()  # break the hard link first: run1/clips.npy must stay intact
        array.write_bytes(b"\x93NUMPY garbage")
    else:
        array.unlink()
    index = _build(md, dataset / "run2", cache)
    assert index.attrs == {"decoded": 6, "reused": 0}
    _same_outputs(dataset / "run1", dataset / "run2")
    # And the rebuilt cache works again.
    assert _build(md, dataset / "run3", cache).attrs == {"decoded": 0, "reused": 6}
