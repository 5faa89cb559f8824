"""fvc.inventory: the stat list that lets Snakemake see videos.

The inventory file must change exactly when the usable input set changes (so Snakemake reruns
load_data), keep its mtime otherwise, and never fail for a bad source or a missing video.
Files here are tiny placeholders: the inventory never reads a video.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fvc.inventory import InventoryChange, parse_inventory, scan_inventory, update_inventory

CFG = {"format": "auto", "root": None, "fvc_filename": "{url_id}.*", "group_column": "group"}


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _update(source: Path, inv: Path) -> InventoryChange | None:
    return update_inventory(source, CFG, inv)


def test_folders_add_remove_replace(tmp_path: Path) -> None:
    root = tmp_path / "classes"
    for name in ("real/a.mp4", "real/b.mp4", "fake/c.mp4", "fake/sub/d.webm"):
        _touch(root / name)
    _touch(root / "fake/notes.txt")  # not a video: not listed, so never noticed
    inv = tmp_path / "inv.tsv"
    assert _update(root, inv) is None  # first scan: written
    entries, error = parse_inventory(inv.read_text())
    assert error == "" and len(entries) == 4
    mtime = inv.stat().st_mtime_ns

    change = _update(root, inv)  # unchanged: file left alone
    assert change is not None and not change
    assert inv.stat().st_mtime_ns == mtime
    _touch(root / "fake/notes.txt", b"edited")
    assert not _update(root, inv)

    _touch(root / "fake/e.mp4")
    change = _update(root, inv)
    assert change and change.added == [str(root / "fake/e.mp4")]
    assert "1 added" in change.summary()

    (root / "real/a.mp4").unlink()
    change = _update(root, inv)
    assert change and change.removed == [str(root / "real/a.mp4")]

    _touch(root / "real/b.mp4", b"a longer replacement")
    change = _update(root, inv)
    assert change and change.modified == [str(root / "real/b.mp4")]

    # Same size, mtime moved: noticed. Same size with the old mtime restored: not noticed
    # (documented limit; noticing it would need reading every video).
    st = os.stat(root / "fake/c.mp4")
    os.utime(root / "fake/c.mp4", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert _update(root, inv).modified == [str(root / "fake/c.mp4")]
    st = os.stat(root / "fake/c.mp4")
    _touch(root / "fake/c.mp4", b"y")
    os.utime(root / "fake/c.mp4", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert not _update(root, inv)


def test_table_missing_file_appears_and_vanishes(tmp_path: Path) -> None:
    _touch(tmp_path / "v/a.mp4")
    table = tmp_path / "meta.csv"
    table.write_text("path,label\nv/a.mp4,real\nv/later.mp4,fake\n")
    inv = tmp_path / "inv.tsv"
    _update(table, inv)
    assert parse_inventory(inv.read_text())[0][str(tmp_path / "v/later.mp4")] == (
        "missing",
        "missing",
    )
    _touch(tmp_path / "v/later.mp4")
    assert _update(table, inv).appeared == [str(tmp_path / "v/later.mp4")]
    (tmp_path / "v/a.mp4").unlink()
    assert _update(table, inv).vanished == [str(tmp_path / "v/a.mp4")]


@pytest.mark.parametrize("fmt", ["list", "fvc"])
def test_list_and_fvc_sources(tmp_path: Path, fmt: str) -> None:
    if fmt == "list":
        source = tmp_path / "train.txt"
        source.write_text("# path label\nclips/a.mp4 0\nclips/b.mp4 1\n")
        names = ["a.mp4", "b.mp4"]
    else:
        source = tmp_path / "FVC.csv"
        source.write_text(
            "cascade_id,video_url,label\n1,https://youtu.be/AAA,fake\n2,https://youtu.be/BBB,real\n"
        )
        names = ["AAA.webm", "BBB.mp4"]
    for name in names:
        _touch(tmp_path / "clips" / name)
    cfg = {**CFG, "root": str(tmp_path / "clips")} if fmt == "fvc" else CFG
    entries, error = scan_inventory(source, cfg)
    assert error == ""
    assert sorted(Path(p).name for p in entries) == names
    assert all(size == "1" for size, _ in entries.values())


def test_bad_source_is_recorded_not_raised(tmp_path: Path) -> None:
    table = tmp_path / "meta.csv"
    table.write_text("file,label\nx.mp4,real\n")  # no path column
    inv = tmp_path / "inv.tsv"
    assert _update(table, inv) is None
    assert "missing column" in parse_inventory(inv.read_text())[1]
    assert _update(tmp_path / "nope.csv", inv).other.startswith("metadata unreadable")
    table.write_text("path,label\nx.mp4,real\n")
    change = _update(table, inv)
    assert change and change.other == "metadata readable again"


def test_listings_glob_matches_glob_glob(tmp_path: Path) -> None:
    """The once-per-folder glob behind FVC patterns returns exactly what glob.glob returns."""
    import glob

    from fvc.formats import _Listings

    for name in (
        "a/abc.mp4",
        "a/abc.webm",
        "a/abd.mp4",
        "a/.abc.mp4",
        "b/abc.mkv",
        "b/x[1].mp4",
        ".hidden/abc.mp4",
        "a/ABC.mp4",
    ):
        _touch(tmp_path / name)
    listings = _Listings()
    for pattern in (
        "a/abc.*",
        "*/abc.*",
        "a/ab?.mp4",
        "a/*",
        "a/.*",
        "*/x[[]1].mp4",
        "c/*",
        "a/abc.mp4",
        "*/abc.mkv",
        "a/abc",
        "*/*.mp4",
        "a/[!a]*",
    ):
        full = str(tmp_path / pattern)
        assert sorted(listings.glob(full)) == sorted(glob.glob(full)), pattern
