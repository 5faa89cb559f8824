"""fvc.data: metadata formats, labels, exclusions, clear errors, and the clip cache."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import fvc.data
from fvc.data import (
    EXCLUDED_COLUMNS,
    METADATA_COLUMNS,
    DataError,
    Progress,
    load_metadata,
    read_metadata_source,
)
from fvc.video import decode_clip
from tests.conftest import build_cache, write_video

DATA = {"positive_label": "fake", "group_column": "group", "num_frames": 4, "size": 16}


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six good videos (videos/a0..a5.mp4, one 3 frames long) under a dataset folder."""
    root = tmp_path_factory.mktemp("dataset")
    for i in range(6):
        write_video(root / "videos" / f"a{i}.mp4", frames=3 if i == 5 else 12 + i, w=32, h=24)
    return root


def _table(rows: list[tuple[str, str]], groups: list[str] | None = None) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["path", "label"])
    if groups is not None:
        df["group"] = groups
    return df


GOOD = [(f"videos/a{i}.mp4", "fake" if i % 2 else "real") for i in range(6)]


def _load(tmp: Path, meta: Path, min_per_class: int = 2, **cfg: Any) -> pd.DataFrame:
    return load_metadata(
        {**DATA, **cfg}, meta, tmp / "out/metadata.parquet", tmp / "out/excluded.tsv", min_per_class
    )


def test_csv_is_loaded_probed_and_labelled(videos: Path, tmp_path: Path) -> None:
    meta = videos / "meta.csv"
    _table(GOOD, groups=["g0", "g0", "g1", "g1", "", "g2"]).to_csv(meta, index=False)
    out = _load(tmp_path, meta, workers=2)
    written = pd.read_parquet(tmp_path / "out/metadata.parquet")
    assert list(written.columns) == METADATA_COLUMNS
    pd.testing.assert_frame_equal(out, written)
    assert written["video_id"].tolist() == [f"v0000{i}" for i in range(1, 7)]
    assert written["label"].dtype == np.int8
    assert written["label"].tolist() == [0, 1, 0, 1, 0, 1]
    assert written["label_name"].tolist() == ["real", "fake"] * 3
    assert written["group"].tolist() == ["g0", "g0", "g1", "g1", "v00005", "g2"]
    assert written["frames"].tolist() == [12, 13, 14, 15, 16, 3]
    assert all(Path(p).is_absolute() and Path(p).exists() for p in written["path"])
    assert written["width"].eq(32).all() and written["height"].eq(24).all()
    excluded = pd.read_csv(tmp_path / "out/excluded.tsv", sep="\t")
    assert list(excluded.columns) == EXCLUDED_COLUMNS and excluded.empty


@pytest.mark.parametrize("ext", ["tsv", "parquet"])
def test_tsv_and_parquet_with_numeric_labels(videos: Path, tmp_path: Path, ext: str) -> None:
    df = pd.DataFrame({"path": [p for p, _ in GOOD], "label": [1, 0, 1, 0, 1, 0]})
    meta = tmp_path / f"meta.{ext}"
    df.to_parquet(meta) if ext == "parquet" else df.to_csv(meta, sep="\t", index=False)
    out = _load(tmp_path, meta, root=str(videos))
    assert out["label"].tolist() == [1, 0, 1, 0, 1, 0]  # with 0/1 labels, 1 is positive
    assert out["label_name"].tolist() == ["1", "0"] * 3
    assert out["group"].tolist() == out["video_id"].tolist()


def test_broken_videos_are_excluded_with_reasons(
    videos: Path, tmp_path: Path, broken_videos: dict[str, dict[str, Any]]
) -> None:
    kinds = sorted(broken_videos)
    rows = GOOD + [(str(broken_videos[k]["path"]), "fake") for k in kinds]
    rows.append(GOOD[0])  # the same video listed twice
    meta = videos / "broken.csv"
    _table(rows).to_csv(meta, index=False)
    out = _load(tmp_path, meta)
    excluded = pd.read_csv(tmp_path / "out/excluded.tsv", sep="\t")
    reasons = dict(zip(excluded["row"], excluded["reason"], strict=True))
    for i, kind in enumerate(kinds, start=len(GOOD) + 1):
        if broken_videos[kind]["stage"] == "probe":
            assert reasons[i].startswith(broken_videos[kind]["reason"]), (kind, reasons.get(i))
        else:
            assert i not in reasons
    assert reasons[len(rows)] == "duplicate of row 1"
    assert excluded["row"].tolist() == sorted(excluded["row"])
    # A video that only fails when its frames are decoded is excluded by the clip cache.
    index = build_cache(tmp_path / "out/metadata.parquet", tmp_path / "c", DATA)
    decode_excluded = pd.read_csv(tmp_path / "c/dx.tsv", sep="\t")
    assert list(decode_excluded.columns) == EXCLUDED_COLUMNS
    late = [k for k in kinds if broken_videos[k]["stage"] == "decode"]
    assert sorted(Path(p).stem for p in decode_excluded["path"]) == sorted(late)
    assert all(r.startswith("undecodable") for r in decode_excluded["reason"])
    assert len(index) == len(out) - len(late)
    assert np.load(tmp_path / "c/clips.npy", mmap_mode="r").shape == (len(index), 4, 16, 16, 3)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("third_label", r"row 3: label 'maybe' is a third class"),
        ("no_label_column", r"missing column\(s\) \['label'\]; columns found: \['path', 'lbl'\]"),
        ("too_few", r"class 'fake' has 1 usable videos, fewer than min_per_class=2"),
        ("conflict", r"rows 1 and 3 list the same video .*a0.mp4 with different labels"),
        ("no_positive", r"positive_label 'fake' matches none of the labels \['no', 'yes'\]"),
        ("empty_label", r"row 2: empty label"),
    ],
)
def test_bad_metadata_fails_clearly_and_writes_nothing(
    videos: Path, tmp_path: Path, case: str, message: str
) -> None:
    df = _table(GOOD)
    if case == "third_label":
        df.loc[2, "label"] = "maybe"
    elif case == "no_label_column":
        df = df.rename(columns={"label": "lbl"})
    elif case == "too_few":
        df = df.iloc[[0, 1, 2]]
    elif case == "conflict":
        df.loc[2, "path"] = df.loc[0, "path"]
        df.loc[2, "label"] = "fake"
    elif case == "no_positive":
        df["label"] = ["yes", "no"] * 3
    elif case == "empty_label":
        df.loc[1, "label"] = ""
    meta = videos / f"{case}.csv"
    df.to_csv(meta, index=False)
    with pytest.raises(DataError, match=message) as err:
        _load(tmp_path, meta)
    assert str(meta) in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_list_folders_and_fvc_formats(videos: Path, tmp_path: Path) -> None:
    lst = tmp_path / "train.txt"
    lst.write_text("# path label\n" + "".join(f"{p} {int(lab == 'fake')}\n" for p, lab in GOOD))
    table = read_metadata_source(lst, {"format": "auto", "root": str(videos)})
    assert table["row"].tolist() == [2, 3, 4, 5, 6, 7]  # line numbers
    assert table["path"].tolist() == [str(videos / p) for p, _ in GOOD]

    folders = tmp_path / "classes"
    for p, lab in GOOD:
        (folders / lab).mkdir(parents=True, exist_ok=True)
        (folders / lab / Path(p).name).symlink_to(videos / p)
    out = _load(tmp_path, folders)
    assert (
        sorted(zip(out["label_name"], out["label"], strict=True))
        == [("fake", 1)] * 3 + [("real", 0)] * 3
    )

    fvc = tmp_path / "FVC.csv"
    urls = [f"https://www.youtube.com/watch?v=a{i}" for i in range(6)]
    labels = [lab for _, lab in GOOD]
    pd.DataFrame({"cascade_id": [7, 7, 8, 8, 9, 9], "video_url": urls, "label": labels}).to_csv(
        fvc, index=False
    )
    out = _load(tmp_path, fvc, root=str(videos / "videos"))
    assert [Path(p).name for p in out["path"]] == [f"a{i}.mp4" for i in range(6)]
    assert out["group"].tolist() == ["7", "7", "8", "8", "9", "9"]
    with pytest.raises(DataError, match="fvc_filename"):
        _load(tmp_path, fvc, root=str(videos), fvc_filename="{nope}.mp4")


def test_clip_cache_matches_decode_and_is_deterministic(videos: Path, tmp_path: Path) -> None:
    meta = videos / "cache.csv"
    _table(GOOD).to_csv(meta, index=False)
    _load(tmp_path, meta)
    md = tmp_path / "out/metadata.parquet"
    outs = []
    for workers in (1, 2):
        d = tmp_path / f"w{workers}"
        index = build_cache(md, d, DATA, workers=workers)
        outs.append((d / "clips.npy").read_bytes())
    assert outs[0] == outs[1]
    clips = np.load(tmp_path / "w1/clips.npy")
    assert clips.dtype == np.uint8 and clips.shape == (6, 4, 16, 16, 3)
    assert list(index.columns) == [*METADATA_COLUMNS, "clip_row", "padded"]
    assert index["clip_row"].tolist() == list(range(6))
    assert index["padded"].tolist() == [False] * 5 + [True]  # a5 has 3 frames < 4
    for row in index.itertuples():
        expected, _ = decode_clip(row.path, 4, 16)
        assert np.array_equal(clips[row.clip_row], expected)
    with pytest.raises(DataError, match="fewer than min_per_class"):
        build_cache(md, tmp_path / "x", {**DATA, "short_videos": "exclude"}, min_per_class=3)
    x = tmp_path / "x"
    assert not x.exists() or list(x.iterdir()) == []  # no output, no temp file
    excl = build_cache(md, tmp_path / "y", {**DATA, "short_videos": "exclude"})
    assert len(excl) == 5 and np.load(tmp_path / "y/clips.npy").shape[0] == 5
    assert np.array_equal(np.load(tmp_path / "y/clips.npy"), clips[:5])
    assert pd.read_csv(tmp_path / "y/dx.tsv", sep="\t")["reason"].str.startswith("too short").all()


def test_progress_line_has_counts_rate_and_eta() -> None:
    progress = Progress("decode", 100)
    line = progress.line(25, now=progress.start + 5.0)
    assert line == (
        "decode: [#####...............] 25/100 videos (25%), 5.0 videos/s, "
        "elapsed 0:00:05, ETA 0:00:15"
    )
    assert progress.line(0, now=progress.start + 1).endswith("ETA ?")


def test_stages_log_progress_to_the_end(
    videos: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    meta = videos / "progress.csv"
    _table(GOOD).to_csv(meta, index=False)
    with caplog.at_level(logging.INFO, logger="fvc.data"):
        _load(tmp_path, meta, workers=2)
        build_cache(tmp_path / "out/metadata.parquet", tmp_path / "c", DATA, workers=2)
    lines = [r.getMessage() for r in caplog.records]
    for stage in ("probe", "decode"):
        assert f"{stage}: 6 videos on 2 worker process(es)" in lines
        assert any(
            m.startswith(f"{stage}: [####################] 6/6 videos (100%)") for m in lines
        )


@pytest.mark.parametrize("stage", ["probe", "decode"])
def test_unexpected_errors_stop_the_stage_naming_the_video(
    videos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stage: str
) -> None:
    """Not a known kind of broken file (a bug, a resource problem): stop, never skip silently."""
    meta = videos / "unexpected.csv"
    _table(GOOD).to_csv(meta, index=False)

    def boom(path: Any, *args: Any, **kwargs: Any) -> Any:
        if str(path).endswith("a3.mp4"):
            raise TypeError("something odd\nhappened")
        return real(path, *args, **kwargs)

    if stage == "probe":
        real = fvc.data.probe_video
        monkeypatch.setattr(fvc.data, "probe_video", boom)
        with pytest.raises(
            DataError,
            match=r"a3\.mp4: unexpected TypeError while probing: "
            r"something odd happened",
        ):
            _load(tmp_path, meta, workers=2)  # forked workers inherit the patch
    else:
        _load(tmp_path, meta)
        real = fvc.data.decode_windows
        monkeypatch.setattr(fvc.data, "decode_windows", boom)
        with pytest.raises(DataError, match=r"a3\.mp4: unexpected TypeError while decoding"):
            build_cache(tmp_path / "out/metadata.parquet", tmp_path / "c", DATA)
        assert (
            not (tmp_path / "c/clips.npy").exists() and not (tmp_path / "c/clips.parquet").exists()
        )


@pytest.mark.timeout(120)
def test_forked_decoders_after_decoding_in_the_parent_do_not_deadlock(
    videos: Path, tmp_path: Path
) -> None:
    """swscale state made in the parent must not be reused by forked workers (it hung once)."""
    meta = videos / "fork.csv"
    _table(GOOD).to_csv(meta, index=False)
    _load(tmp_path, meta)
    decode_clip(videos / "videos/a0.mp4", 4, 16)  # the parent now holds a scaler
    index = build_cache(tmp_path / "out/metadata.parquet", tmp_path / "c", DATA, workers=2)
    assert len(index) == len(GOOD)
