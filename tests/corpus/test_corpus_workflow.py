"""The corpus through real Snakemake, in every metadata format.

Each format runs load_data -> preprocess -> split (one experiment per format in one project);
the CSV experiment then trains to the end, so "no broken video reaches training" is checked on
real train outputs. The FVC experiment uses 3 group-aware folds over its cascade ids.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.corpus.checks import check_exclusions, real_paths, usable_files
from tests.corpus.corpus import FORMATS, Metadata, add_conflict, write_metadata
from tests.workflow.helpers import make_project, planned_jobs, snakemake

pytestmark = pytest.mark.workflow

#: short_videos per format: the CSV run pads the 1-frame video (and trains on it), the
#: others exclude it.
SHORT = {fmt: "pad" if fmt == "csv" else "exclude" for fmt in FORMATS}
N_SPLITS = {fmt: 3 if fmt == "fvc" else 2 for fmt in FORMATS}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(tmp_path_factory.mktemp("corpus_wf") / "proj")


def _overlay(proj: Path, fmt: str, meta: Metadata, name: str | None = None) -> str:
    """Write ``<name>.yaml`` selecting ``meta`` as the data of experiment ``corpus_<name>``."""
    name = name or fmt
    data = {"metadata": str(meta.path), "root": None, "format": "auto", **meta.data}
    # The library's group_column is cv.group_column in the workflow config.
    group_column = data.pop("group_column", "group")
    overlay = {
        "experiment": f"corpus_{name}",
        "data": data,
        "cv": {"n_splits": N_SPLITS[fmt], "group_column": group_column},
    }
    (proj / f"{name}.yaml").write_text(yaml.safe_dump(overlay))
    return f"{name}.yaml"


RunFormat = Callable[[str], Metadata]


@pytest.fixture(scope="module")
def run_format(project: Path, corpus: Path) -> RunFormat:
    """``run_format(fmt)``: run experiment ``corpus_<fmt>`` up to its splits (once per module)."""
    done: dict[str, Metadata] = {}

    def run(fmt: str) -> Metadata:
        if fmt not in done:
            meta = write_metadata(fmt, corpus, project / "metadata" / fmt, SHORT[fmt])
            overlay = _overlay(project, fmt, meta)
            snakemake(project, f"runs/corpus_{fmt}/splits.parquet", overlays=(overlay,))
            done[fmt] = meta
        return done[fmt]

    return run


@pytest.mark.parametrize("fmt", FORMATS)
def test_workflow_excludes_exactly_the_broken_videos(
    project: Path, corpus: Path, run_format: RunFormat, fmt: str
) -> None:
    meta = run_format(fmt)
    run = project / f"runs/corpus_{fmt}"
    check_exclusions(meta, run / "data/excluded.tsv", run / "data/decode_excluded.tsv")
    splits = pd.read_parquet(run / "splits.parquet")
    assert real_paths(splits["path"]) == usable_files(meta, corpus)
    assert sorted(splits["fold"].unique()) == list(range(N_SPLITS[fmt]))
    index = pd.read_parquet(run / "data/clips.parquet")
    assert real_paths(index["path"]) == real_paths(splits["path"])
    padded = set(index.loc[index["padded"], "path"].map(lambda p: Path(p).name))
    assert padded == ({"one_frame.mp4"} if SHORT[fmt] == "pad" else set())


def test_fvc_cascades_never_straddle_train_and_validation(
    project: Path, run_format: RunFormat
) -> None:
    fvc_meta = run_format("fvc")
    run = project / "runs/corpus_fvc"
    splits = pd.read_parquet(run / "splits.parquet")
    meta = pd.read_parquet(run / "data/metadata.parquet")
    fvc = pd.read_csv(fvc_meta.path, dtype=str)
    # The group is FVC's cascade_id of the row the video came from.
    cascade = dict(zip(range(1, len(fvc) + 1), fvc["cascade_id"], strict=True))
    assert all(
        g == cascade[int(v[1:])] for v, g in zip(meta["video_id"], meta["group"], strict=True)
    )
    assert splits["group"].nunique() >= N_SPLITS["fvc"]
    for k in range(N_SPLITS["fvc"]):
        val = set(splits.loc[splits["fold"] == k, "group"])
        train = set(splits.loc[splits["fold"] != k, "group"])
        assert val and train and not val & train, f"fold {k}: groups {val & train} in both"
    summary = pd.read_csv(run / "splits_summary.tsv", sep="\t")
    assert summary["n_groups"].tolist() == [
        splits.loc[splits["fold"] == k, "group"].nunique() for k in range(N_SPLITS["fvc"])
    ]
    assert summary["n_val"].sum() == len(splits)


def test_full_run_trains_and_predicts_only_usable_videos(
    project: Path, corpus: Path, run_format: RunFormat
) -> None:
    csv_meta = run_format("csv")
    # both folds trained; the result jobs (aggregate, plots, ...) add nothing to this check
    folds = [f"runs/corpus_csv/fold_{k}/predictions.parquet" for k in range(N_SPLITS["csv"])]
    snakemake(project, *folds, overlays=("csv.yaml",))
    run = project / "runs/corpus_csv"
    splits = pd.read_parquet(run / "splits.parquet")
    usable = set(splits["video_id"])
    predicted: set[str] = set()
    for k in range(N_SPLITS["csv"]):
        manifest = pd.read_parquet(run / f"fold_{k}/augment/manifest.parquet")
        assert set(manifest["video_id"]) <= usable - set(
            splits.loc[splits["fold"] == k, "video_id"]
        )
        preds = pd.read_parquet(run / f"fold_{k}/predictions.parquet")
        assert set(preds["video_id"]) == set(splits.loc[splits["fold"] == k, "video_id"])
        predicted |= set(preds["video_id"])
    assert predicted == usable
    assert real_paths(splits["path"]) == usable_files(csv_meta, corpus)


def test_changing_train_settings_never_changes_folds(project: Path, run_format: RunFormat) -> None:
    """train.* / augment.* never reach the split rule: folds are planned and written the same."""
    run_format("csv")
    run = project / "runs/corpus_csv"
    before = (run / "splits.parquet").read_bytes()
    overlay = yaml.safe_load((project / "csv.yaml").read_text())
    overlay["train"] = {
        "epochs": 3,
        "lr": 0.01,
        "batch_size": 2,
        "seed": 5,
        "sampler": "balanced",
        "class_weights": "auto",
    }
    overlay["augment"] = {"copies": 2, "seed": 3}
    (project / "csv_train.yaml").write_text(yaml.safe_dump(overlay))
    jobs = planned_jobs(project, overlays=("csv_train.yaml",))
    assert "split" not in jobs and "preprocess" not in jobs and "load_data" not in jobs
    assert any(j.startswith("train") for j in jobs)
    mtime = (run / "splits.parquet").stat().st_mtime_ns
    # The target goes first: --forcerun takes every following word as a rule name.
    snakemake(
        project,
        "runs/corpus_csv/splits.parquet",
        "--forcerun",
        "split",
        overlays=("csv_train.yaml",),
    )
    assert (run / "splits.parquet").stat().st_mtime_ns > mtime  # really rewritten
    assert (run / "splits.parquet").read_bytes() == before


def test_two_labels_for_one_file_stop_the_workflow_naming_both_rows(
    project: Path, corpus: Path
) -> None:
    meta = write_metadata("csv", corpus, project / "metadata/conflict", "exclude")
    _, first, second = add_conflict("csv", meta, corpus)
    overlay = _overlay(project, "csv", meta, name="conflict")
    proc = snakemake(
        project, "runs/corpus_conflict/splits.parquet", overlays=(overlay,), check=False
    )
    assert proc.returncode != 0
    log = (project / "runs/corpus_conflict/logs/load_data.log").read_text()
    assert f"rows {first} and {second} list the same video" in log
    assert "h264.mp4" in log
    assert not (project / "runs/corpus_conflict/data/metadata.parquet").exists()
