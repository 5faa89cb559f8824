"""Assertions shared by the library-level and the Snakemake corpus tests."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from tests.corpus.corpus import Metadata


def check_exclusions(meta: Metadata, excluded: Path, decode_excluded: Path) -> None:
    """excluded.tsv and decode_excluded.tsv list exactly the expected rows, with their reasons."""
    for path, stage in ((excluded, "probe"), (decode_excluded, "decode")):
        table = pd.read_csv(path, sep="\t", dtype={"reason": str})
        assert list(table.columns) == ["row", "path", "label", "reason"]
        got = dict(zip(table["row"].astype(int), table["reason"], strict=True))
        want = {row: e for row, e in meta.expected.items() if e[1] == stage}
        assert sorted(got) == sorted(want), (
            f"{path.name}: rows {sorted(got)} listed, expected {sorted(want)}: "
            f"{ {r: want.get(r, ('?',))[0] for r in set(got) ^ set(want)} }"
        )
        for row, (name, _, prefix, detail) in want.items():
            assert got[row].startswith(prefix), (name, got[row])
            assert detail in got[row], (name, got[row])
            assert "\n" not in got[row]
        names = {int(r): Path(p).name for r, p in zip(table["row"], table["path"], strict=True)}
        for row, (name, *_) in want.items():
            if not name.startswith("h264"):  # the duplicate row repeats h264.mp4 (or its link)
                assert names[row] == name or names[row].startswith(Path(name).stem), names[row]


def usable_files(meta: Metadata, root: Path) -> set[str]:
    """Real paths of the files that must reach the clip cache and the splits."""
    usable = {name for row, name in meta.rows.items() if row not in meta.expected}
    return {
        os.path.realpath(root / label / name)
        for name in usable
        for label in ("real", "fake")
        if (root / label / name).exists()
    }


def real_paths(paths: pd.Series) -> set[str]:
    return {os.path.realpath(p) for p in paths}
