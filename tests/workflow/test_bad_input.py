"""Bad input through real Snakemake: broken videos are excluded, bad tables fail clearly.

A failing stage must leave no artifact that looks complete, so a later run cannot pick it up.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from tests.workflow.helpers import make_project, snakemake

# func_only: the module's demo fixture is not charged to the first test's budget.
pytestmark = [pytest.mark.workflow, pytest.mark.timeout(600, func_only=True)]

RUN = Path("runs/tiny")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project whose demo videos exist (only make_demo has run)."""
    proj = make_project(tmp_path_factory.mktemp("bad") / "proj")
    snakemake(proj, "runs/demo_data/metadata.csv")
    return proj


def _use_metadata(proj: Path, table: pd.DataFrame, name: str, sep: str = ",") -> None:
    path = proj / name
    table.to_csv(path, sep=sep, index=False)
    (proj / "meta.yaml").write_text(f"data:\n  metadata: {name}\n  root: runs/demo_data\n")


def _demo_table(proj: Path) -> pd.DataFrame:
    return pd.read_csv(proj / "runs/demo_data/metadata.csv")


def test_broken_videos_are_excluded_with_reasons(demo: Path) -> None:
    table = _demo_table(demo)
    videos = demo / "runs/demo_data/videos"
    good = videos / Path(table["path"].iloc[0]).name
    (videos / "empty.mp4").write_bytes(b"")
    data = good.read_bytes()
    (videos / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (videos / "notes.mp4").write_text("this is not a video\n" * 50)
    broken = pd.DataFrame(
        {
            "path": [
                "videos/missing.mp4",
                "videos/empty.mp4",
                "videos/truncated.mp4",
                "videos/notes.mp4",
            ],
            "label": ["fake", "real", "fake", "real"],
            "group": ["b1", "b2", "b3", "b4"],
        }
    )
    _use_metadata(demo, pd.concat([table, broken], ignore_index=True), "with_broken.csv")
    snakemake(demo, str(RUN / "splits.parquet"), overlays=("meta.yaml",))
    excluded = pd.read_csv(demo / RUN / "data/excluded.tsv", sep="\t")
    decode_excluded = pd.read_csv(demo / RUN / "data/decode_excluded.tsv", sep="\t")
    all_excluded = pd.concat([excluded, decode_excluded])
    assert sorted(Path(p).name for p in all_excluded["path"]) == sorted(
        ["missing.mp4", "empty.mp4", "truncated.mp4", "notes.mp4"]
    )
    reasons = dict(
        zip((Path(p).name for p in all_excluded["path"]), all_excluded["reason"], strict=True)
    )
    assert "missing" in reasons["missing.mp4"].lower()
    assert "empty" in reasons["empty.mp4"].lower()
    splits = pd.read_parquet(demo / RUN / "splits.parquet")
    assert len(splits) == len(table)
    assert not {"missing.mp4", "empty.mp4", "truncated.mp4", "notes.mp4"} & {
        Path(p).name for p in splits["path"]
    }


@pytest.mark.parametrize(
    ("case", "expect"),
    [
        ("unknown_label", "maybe"),
        ("no_path_column", r"missing column.*'path'"),
        ("too_few", "fewer than"),
    ],
)
def test_bad_tables_fail_clearly_and_write_nothing(demo: Path, case: str, expect: str) -> None:
    table = _demo_table(demo)
    if case == "unknown_label":
        table.loc[3, "label"] = "maybe"
    elif case == "no_path_column":
        table = table.rename(columns={"path": "file"})
    else:
        fake = table[table["label"] == "fake"].head(1)
        table = pd.concat([table[table["label"] == "real"], fake])
    _use_metadata(demo, table, f"{case}.csv")
    out = demo / RUN / "data/metadata.parquet"
    out.unlink(missing_ok=True)
    (demo / RUN / "logs/load_data.log").unlink(missing_ok=True)
    proc = snakemake(
        demo,
        str(RUN / "data/metadata.parquet"),
        overlays=("meta.yaml",),
        check=False,
    )
    assert proc.returncode != 0
    log = (demo / RUN / "logs/load_data.log").read_text()
    assert f"{case}.csv" in log, log
    # What the message says, apart from the file name (which may itself contain `expect`).
    assert re.search(expect, log.replace(f"{case}.csv", "<file>")), log
    assert not out.exists()
    assert not list((demo / RUN / "data").glob("*.tmp"))
