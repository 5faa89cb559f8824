"""Dataset changes through real Snakemake: the workflow sees the videos.

A class-folder dataset and a table dataset are built from the demo videos. After a finished run,
an unchanged dataset is "Nothing to be done"; a video added to or removed from a class folder, a
file replaced under a listed name, or a missing file that appears makes ``snakemake -n`` plan
``load_data`` and what follows, with the inventory named as the reason; preprocess then decodes
only the new or changed videos, and split logs how many videos changed folds.

Tests in this module run in order on one project (each leaves the dataset as the next expects).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.workflow.helpers import make_project, planned_jobs, snakemake

pytestmark = pytest.mark.workflow

RUN = Path("runs/tiny")
TABLE_RUN = Path("runs/table")
FOLDERS = ("folders.yaml",)
TABLE = ("table.yaml",)
DOWNSTREAM = {"load_data", "preprocess", "split", "train[fold=0]", "train[fold=1]"}


def _decoded(proj: Path, run: Path) -> tuple[int, int]:
    """(decoded, reused) from the last preprocess log."""
    log = (proj / run / "logs/preprocess.log").read_text()
    found = re.findall(r"decoded (\d+) video\(s\), reused (\d+)", log)
    assert found, log[-2000:]
    return int(found[-1][0]), int(found[-1][1])


def _dry_run_text(proj: Path, *args: str, overlays: tuple[str, ...]) -> str:
    proc = snakemake(proj, "-n", *args, overlays=overlays)
    return proc.stdout + proc.stderr


def _clip_of(proj: Path, run: Path, name: str) -> np.ndarray:
    index = pd.read_parquet(proj / run / "data/clips.parquet")
    rows = index.loc[index["path"].map(lambda p: Path(p).name) == name, "clip_row"]
    assert len(rows) == 1, f"{name} not in clips.parquet once"
    return np.load(proj / run / "data/clips.npy", mmap_mode="r")[int(rows.iloc[0])]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run on a class-folder copy of the demo videos (24 videos, 2 folds)."""
    proj = make_project(tmp_path_factory.mktemp("changes") / "proj")
    snakemake(proj, "runs/demo_data/metadata.csv")
    table = pd.read_csv(proj / "runs/demo_data/metadata.csv")
    for rec in table.itertuples():
        dest = proj / "classes" / rec.label / Path(rec.path).name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(proj / "runs/demo_data" / rec.path, dest)
    (proj / "folders.yaml").write_text("data:\n  metadata: classes\n")
    snakemake(proj, overlays=FOLDERS)
    return proj


def test_unchanged_dataset_is_nothing_to_be_done(project: Path) -> None:
    assert planned_jobs(project, overlays=FOLDERS) == {}
    inventory = (project / RUN / "data/inventory.tsv").read_text().splitlines()
    assert len(inventory) == 1 + 24  # header + one line per video


def test_video_added_to_class_folder_is_noticed_and_decoded_alone(project: Path) -> None:
    fake = project / "classes/fake"
    first = sorted(fake.iterdir())[0]
    shutil.copy(first, fake / "zz_new_download.mp4")
    text = _dry_run_text(project, overlays=FOLDERS)
    assert "inventory.tsv" in text and "1 added" in text
    jobs = planned_jobs(project, overlays=FOLDERS)
    assert set(jobs) >= DOWNSTREAM, jobs
    snakemake(project, str(RUN / "splits.parquet"), overlays=FOLDERS)
    assert _decoded(project, RUN) == (1, 24)
    meta = pd.read_parquet(project / RUN / "data/metadata.parquet")
    assert "zz_new_download.mp4" in {Path(p).name for p in meta["path"]}
    split_log = (project / RUN / "logs/split.log").read_text()
    moved = r"\d+ of 24 videos changed fold, \d+ kept their fold, 1 new, 0 gone"
    assert re.search(moved, split_log), split_log
    # The rest of the plan: the changed folds are retrained (file dependencies do it).
    assert {"train[fold=0]", "train[fold=1]"} <= set(planned_jobs(project, overlays=FOLDERS))


def test_video_removed_from_class_folder_is_noticed(project: Path) -> None:
    gone = sorted((project / "classes/real").iterdir())[-1]
    gone.unlink()
    text = _dry_run_text(project, str(RUN / "splits.parquet"), overlays=FOLDERS)
    assert "1 removed" in text
    assert {"load_data", "preprocess", "split"} <= set(
        planned_jobs(project, str(RUN / "splits.parquet"), overlays=FOLDERS)
    )
    snakemake(project, str(RUN / "splits.parquet"), overlays=FOLDERS)
    assert _decoded(project, RUN) == (0, 24)
    meta = pd.read_parquet(project / RUN / "data/metadata.parquet")
    assert gone.name not in {Path(p).name for p in meta["path"]}
    assert "0 new, 1 gone" in (project / RUN / "logs/split.log").read_text()


def test_video_replaced_in_class_folder_is_decoded_again(project: Path) -> None:
    real = sorted((project / "classes/real").iterdir())
    target, other = real[0], real[1]
    before = np.array(_clip_of(project, RUN, target.name))
    shutil.copy(other, target)  # another video under the same name (new size and mtime)
    text = _dry_run_text(project, str(RUN / "splits.parquet"), overlays=FOLDERS)
    assert "1 modified" in text
    snakemake(project, str(RUN / "splits.parquet"), overlays=FOLDERS)
    assert _decoded(project, RUN) == (1, 23)
    after = _clip_of(project, RUN, target.name)
    assert not np.array_equal(before, after)
    assert np.array_equal(after, _clip_of(project, RUN, other.name))
    assert planned_jobs(project, str(RUN / "splits.parquet"), overlays=FOLDERS) == {}


def test_changed_decode_setting_decodes_everything(project: Path) -> None:
    (project / "size.yaml").write_text("data:\n  metadata: classes\n  size: 24\n")
    snakemake(project, str(RUN / "data/clips.parquet"), overlays=("size.yaml",))
    assert _decoded(project, RUN) == (24, 0)
    assert np.load(project / RUN / "data/clips.npy", mmap_mode="r").shape[1:] == (4, 24, 24, 3)


@pytest.fixture(scope="module")
def table_project(project: Path) -> Path:
    """Experiment `table`: a CSV listing the demo videos plus one file that does not exist yet."""
    table = pd.read_csv(project / "runs/demo_data/metadata.csv")
    late = pd.DataFrame({"path": ["videos/late.mp4"], "label": ["fake"], "group": ["late"]})
    pd.concat([table, late]).to_csv(project / "table.csv", index=False)
    (project / "table.yaml").write_text(
        "experiment: table\ndata:\n  metadata: table.csv\n  root: runs/demo_data\n"
    )
    snakemake(project, str(TABLE_RUN / "data/clips.parquet"), overlays=TABLE)
    return project


def test_table_unchanged_then_listed_file_replaced(table_project: Path) -> None:
    target = str(TABLE_RUN / "data/clips.parquet")
    assert planned_jobs(table_project, target, overlays=TABLE) == {}
    videos = sorted((table_project / "runs/demo_data/videos").glob("*.mp4"))
    shutil.copy(videos[1], videos[0])
    text = _dry_run_text(table_project, target, overlays=TABLE)
    assert "1 modified" in text and "inventory.tsv" in text
    assert planned_jobs(table_project, target, overlays=TABLE) == {"load_data": 1, "preprocess": 1}
    snakemake(table_project, target, overlays=TABLE)
    assert _decoded(table_project, TABLE_RUN) == (1, 23)


def test_table_missing_file_that_appears(table_project: Path) -> None:
    target = str(TABLE_RUN / "data/clips.parquet")
    excluded = pd.read_csv(table_project / TABLE_RUN / "data/excluded.tsv", sep="\t")
    assert [Path(p).name for p in excluded["path"]] == ["late.mp4"]
    videos = table_project / "runs/demo_data/videos"
    shutil.copy(sorted(videos.glob("*.mp4"))[2], videos / "late.mp4")
    text = _dry_run_text(table_project, target, overlays=TABLE)
    assert "1 appeared" in text
    snakemake(table_project, target, overlays=TABLE)
    assert _decoded(table_project, TABLE_RUN) == (1, 24)
    assert planned_jobs(table_project, target, overlays=TABLE) == {}
