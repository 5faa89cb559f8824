"""fvc.formats: format detection, each reader's edge cases, label mapping, clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from fvc.formats import DataError, detect_format, encode_labels, read_metadata_source, url_id


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


@pytest.mark.parametrize(
    ("name", "content", "fmt"),
    [
        ("m.csv", "path,label,group\na.mp4,fake,g\n", "table"),
        ("m.tsv", "Path\tLabel\na.mp4\treal\n", "table"),
        ("FVC.csv", "cascade_id,video_url,label\n1,https://youtu.be/x,fake\n", "fvc"),
        ("train.txt", "a.mp4 1\n", "list"),
        ("headerless.csv", "a.mp4 1\nb.mp4 0\n", "list"),
    ],
)
def test_detect_format(tmp_path: Path, name: str, content: str, fmt: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    assert detect_format(path) == fmt
    assert detect_format(tmp_path) == "folders"


def test_unknown_extension_and_unreadable_parquet_fail_clearly(tmp_path: Path) -> None:
    (tmp_path / "m.json").write_text("{}")
    with pytest.raises(DataError, match=r"m\.json: cannot tell the metadata format"):
        read_metadata_source(tmp_path / "m.json", {})
    (tmp_path / "m.parquet").write_text("not parquet")
    with pytest.raises(DataError, match=r"m\.parquet: not a readable Parquet file"):
        read_metadata_source(tmp_path / "m.parquet", {})
    with pytest.raises(DataError, match="metadata not found"):
        read_metadata_source(tmp_path / "nope.csv", {})
    with pytest.raises(DataError, match=r"is a folder but data\.format is 'table'"):
        read_metadata_source(tmp_path, {"format": "table"})


@pytest.mark.parametrize(
    ("url", "ident"),
    [
        ("https://www.youtube.com/watch?v=dQw4w9WgXcQ&t=1s", "dQw4w9WgXcQ"),
        ("https://youtu.be/dQw4w9WgXcQ", "dQw4w9WgXcQ"),
        ("https://twitter.com/user/status/12345/video/1", "1"),
        ("https://example.org/clips/a b?.mp4", "a_b"),
    ],
)
def test_url_id(url: str, ident: str) -> None:
    assert url_id(url) == ident


def test_fvc_filename_pattern_with_wildcard_extension(tmp_path: Path) -> None:
    """Downloaders pick the extension: ``{url_id}.*`` finds it; side files are ignored."""
    root = tmp_path / "videos"
    _touch(root / "aaa.webm")
    _touch(root / "aaa.info.json")  # a downloader's side file: not a video, not matched
    _touch(root / "bbb.mp4")
    _touch(root / "bbb.json")
    csv = tmp_path / "FVC.csv"
    pd.DataFrame(
        {
            "cascade_id": ["c1", "c1", "c2"],
            "video_url": [
                "https://youtu.be/aaa",
                "https://www.youtube.com/watch?v=bbb",
                "https://youtu.be/ccc",
            ],
            "label": ["fake", "real", "fake"],
        }
    ).to_csv(csv, index=False)
    table = read_metadata_source(
        csv, {"root": str(root), "fvc_filename": "{url_id}.*", "group_column": "group"}
    )
    assert table["path"].tolist() == [
        str(root / "aaa.webm"),
        str(root / "bbb.mp4"),
        str(root / "ccc.*"),
    ]  # ccc: reported missing
    assert table["group"].tolist() == ["c1", "c1", "c2"]
    assert table["row"].tolist() == [1, 2, 3]
    _touch(root / "aaa.mp4")  # now two videos match row 1: picking one could swap videos
    with pytest.raises(DataError, match=r"FVC\.csv: row 1: data.fvc_filename matches 2 files"):
        read_metadata_source(csv, {"root": str(root), "fvc_filename": "{url_id}.*"})


def test_fvc_path_column_and_other_columns_in_the_pattern(tmp_path: Path) -> None:
    csv = tmp_path / "FVC.csv"
    pd.DataFrame(
        {
            "cascade_id": [3],
            "video_url": ["https://youtu.be/q"],
            "label": ["real"],
            "platform": ["YouTube"],
        }
    ).to_csv(csv, index=False)
    table = read_metadata_source(csv, {"fvc_filename": "{platform}/{cascade_id}_{row}.mp4"})
    assert table["path"].tolist() == [str(tmp_path / "YouTube/3_1.mp4")]
    with_path = tmp_path / "FVC_paths.csv"
    pd.read_csv(csv).assign(path="local/q.mkv").to_csv(with_path, index=False)
    assert read_metadata_source(with_path, {"format": "fvc"})["path"].tolist() == [
        str(tmp_path / "local/q.mkv")
    ]


def test_list_file_rows_are_line_numbers_and_paths_may_hold_spaces(tmp_path: Path) -> None:
    lst = tmp_path / "val.txt"
    lst.write_text("# MMAction2 list\n\nclips/my video.mp4 1\n  clips/b.mp4   0  \n")
    table = read_metadata_source(lst, {})
    assert table["row"].tolist() == [3, 4]
    assert table["path"].tolist() == [
        str(tmp_path / "clips/my video.mp4"),
        str(tmp_path / "clips/b.mp4"),
    ]
    assert table["label"].tolist() == ["1", "0"]
    lst.write_text("a.mp4 1\nlonely\n")
    with pytest.raises(DataError, match=r"val\.txt: line 2: expected 'path label'"):
        read_metadata_source(lst, {})


def test_folders_list_videos_and_broken_links_only(tmp_path: Path) -> None:
    root = tmp_path / "data"
    _touch(root / "fake/b.mp4")
    _touch(root / "fake/sub/c.MKV")  # searched recursively, extension case-insensitive
    _touch(root / "fake/notes.txt")  # not a video extension: ignored
    _touch(root / "real/a.webm")
    (root / "real/gone.mp4").symlink_to(root / "nowhere.mp4")  # dangling: listed, then missing
    _touch(root / ".cache/x.mp4")  # hidden folder: not a class
    table = read_metadata_source(root, {})
    assert [os.path.relpath(p, root) for p in table["path"]] == [
        "fake/b.mp4",
        "fake/sub/c.MKV",
        "real/a.webm",
        "real/gone.mp4",
    ]
    assert table["label"].tolist() == ["fake", "fake", "real", "real"]
    _touch(root / "unsure/d.mp4")
    with pytest.raises(DataError, match=r"expected 2 class folders with videos .* found 3"):
        read_metadata_source(root, {})


def test_relative_paths_resolve_against_root_or_the_metadata_folder(tmp_path: Path) -> None:
    csv = tmp_path / "meta/m.csv"
    csv.parent.mkdir()
    pd.DataFrame(
        {"path": ["a.mp4", "/abs/b.mp4"], "label": ["real", "fake"], "row": [9, 9]}
    ).to_csv(csv, index=False)
    table = read_metadata_source(csv, {})
    assert table["path"].tolist() == [str(tmp_path / "meta/a.mp4"), "/abs/b.mp4"]
    assert table["row"].tolist() == [1, 2]  # a user column called 'row' does not leak in
    table = read_metadata_source(csv, {"root": str(tmp_path / "videos")})
    assert table["path"].tolist() == [str(tmp_path / "videos/a.mp4"), "/abs/b.mp4"]
    pd.DataFrame({"path": ["a.mp4", " "], "label": ["real", "fake"]}).to_csv(csv, index=False)
    with pytest.raises(DataError, match=r"m\.csv: row 2: empty path"):
        read_metadata_source(csv, {})


@pytest.mark.parametrize(
    ("names", "positive", "labels", "classes"),
    [
        (["FAKE", "Real", "fake"], "fake", [1, 0, 1], {1: "FAKE", 0: "Real"}),
        (["fake", "real"], "real", [0, 1], {1: "real", 0: "fake"}),
        (["1", "0.0", "1.0"], "fake", [1, 0, 1], {1: "1", 0: "0.0"}),
        (["fake", "fake"], "fake", [1, 1], {1: "fake", 0: "not fake"}),
    ],
)
def test_label_mapping(
    names: list[str], positive: str, labels: list[int], classes: dict[int, str]
) -> None:
    got, names_out = encode_labels(names, positive, "m.csv", list(range(1, len(names) + 1)))
    assert got.tolist() == labels
    assert names_out == classes
