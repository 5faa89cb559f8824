"""Predict sets through real Snakemake.

A copy of the finished tiny run (two folds) scores two predict sets: a labelled table with
broken and missing files, and an unlabelled folder; adding the sets trains nothing again. Then:
the CLI on two files, unchanged sets are "nothing to be done", an added video reruns only its
set and decodes only itself, and bad predict config fails with one line naming the key.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fvc.metrics import choose_threshold
from fvc.predict import predict_main
from tests.workflow.conftest import copy_run
from tests.workflow.helpers import planned_jobs, snakemake

pytestmark = pytest.mark.workflow

RUN = Path("runs/tiny")
OVERLAY = ("predict.yaml",)


@pytest.fixture(scope="module")
def proj(finished_tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The finished tiny run with the predict sets `lab` (table) and `flat` (folder) scored."""
    proj = copy_run(finished_tiny_run, tmp_path_factory.mktemp("predict") / "proj")
    demo = pd.read_csv(proj / "runs/demo_data/metadata.csv")
    videos = proj / "runs/demo_data"
    lab = proj / "sets" / "lab"
    lab.mkdir(parents=True)
    rows = demo.iloc[:6]
    for p in rows["path"]:
        shutil.copy2(videos / p, lab / Path(p).name)
    (lab / "empty.mp4").write_bytes(b"")
    (lab / "notes.mp4").write_text("this is not a video\n" * 50)
    table = pd.DataFrame(
        {
            "path": [f"lab/{Path(p).name}" for p in rows["path"]]
            + ["lab/empty.mp4", "lab/notes.mp4", "lab/gone.mp4"],
            "label": [*rows["label"], "real", "fake", "fake"],
        }
    )
    table.to_csv(proj / "sets" / "lab.csv", index=False)
    flat = proj / "sets" / "flat"
    flat.mkdir()
    for p in demo["path"].iloc[6:8]:
        shutil.copy2(videos / p, flat / Path(p).name)
    (proj / "predict.yaml").write_text(
        "predict:\n  sets:\n    lab: sets/lab.csv\n    flat: sets/flat\n"
    )
    planned = {job.split("[")[0] for job in planned_jobs(proj, overlays=OVERLAY)}
    assert not planned & {"load_data", "preprocess", "split", "augment", "train"}, planned
    snakemake(proj, overlays=OVERLAY)
    return proj


def _oof(proj: Path) -> pd.DataFrame:
    return pd.concat(
        [pd.read_parquet(p) for p in sorted((proj / RUN).glob("fold_*/predictions.parquet"))]
    )


def test_labelled_set_scores_usable_videos_and_lists_the_broken(proj: Path) -> None:
    out = proj / RUN / "predict"
    table = pd.read_parquet(out / "lab.parquet")
    assert len(table) == 6
    assert {"p_fold_0", "p_fold_1", "p_fake", "decision", "threshold"} <= set(table.columns)
    np.testing.assert_allclose(table["p_fake"], table[["p_fold_0", "p_fold_1"]].mean(axis=1))
    assert (table["decision"] == (table["p_fake"] >= table["threshold"]).astype(int)).all()
    # Decoded exactly as in training: each fold model gives the very probability it gave the
    # same video (a copy under another path) as out-of-fold prediction.
    oof = _oof(proj)
    oof["name"] = [Path(p).name for p in oof["path"]]
    table["name"] = [Path(p).name for p in table["path"]]
    both = table.merge(oof, on="name")
    assert len(both) == 6
    own = [row[f"p_fold_{row['fold']}"] for _, row in both.iterrows()]
    np.testing.assert_allclose(own, both["prob_fake"], rtol=0, atol=1e-6)
    # the threshold: summary.json's, the EER point (cv.threshold default) of the pooled
    # out-of-fold predictions
    summary = json.loads((proj / RUN / "summary.json").read_text())
    assert summary["threshold"]["method"] == "eer"
    assert table["threshold"].iloc[0] == pytest.approx(summary["threshold"]["value"])
    assert table["threshold"].iloc[0] == pytest.approx(
        choose_threshold(oof["label"].to_numpy(), oof["prob_fake"].to_numpy(), "eer")
    )

    excluded = pd.read_csv(out / "lab_excluded.tsv", sep="\t")
    reasons = {Path(p).name: r for p, r in zip(excluded["path"], excluded["reason"], strict=True)}
    assert reasons.keys() == {"empty.mp4", "notes.mp4", "gone.mp4"}
    assert reasons["empty.mp4"] == "empty file"
    assert reasons["notes.mp4"].startswith("not a video")
    assert reasons["gone.mp4"] == "missing file"

    metrics = json.loads((out / "lab_metrics.json").read_text())
    assert metrics["labelled"] is True and metrics["n_videos"] == 6 and metrics["n_excluded"] == 3
    summary = json.loads((proj / RUN / "summary.json").read_text())
    assert set(summary["pooled_out_of_fold"]) <= set(metrics)  # the CV summary's metrics
    assert metrics["threshold"] == table["threshold"].iloc[0]


def test_unlabelled_folder(proj: Path) -> None:
    out = proj / RUN / "predict"
    table = pd.read_parquet(out / "flat.parquet")
    assert len(table) == 2 and table["label"].isna().all()
    assert (table["decision"] == (table["p_fake"] >= table["threshold"]).astype(int)).all()
    metrics = json.loads((out / "flat_metrics.json").read_text())
    assert metrics["labelled"] is False and "roc_auc" not in metrics
    assert pd.read_csv(out / "flat_excluded.tsv", sep="\t").empty
    assert (proj / RUN / "benchmarks/predict/flat.tsv").exists()
    assert (proj / RUN / "logs/predict_data/flat.log").exists()


def test_cli_prints_the_same_probabilities(
    proj: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(proj)
    table = pd.read_parquet(RUN / "predict" / "flat.parquet")
    files = [str(p) for p in table["path"]]
    assert predict_main([str(RUN), *files]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["path", "p_fold_0", "p_fold_1", "p_fake", "decision", "reason"]
    for line, (_, row) in zip(lines[1:3], table.iterrows(), strict=True):
        path, p0, p1, p, decision = line.split()
        assert path == row["path"]
        assert [float(p0), float(p1), float(p)] == pytest.approx(
            [row["p_fold_0"], row["p_fold_1"], row["p_fake"]], abs=6e-5
        )
        assert decision == ("fake" if row["decision"] else "real")
    assert lines[3] == f"threshold: {table['threshold'].iloc[0]:.4f}"


def test_default_config_has_no_predict_jobs_and_bad_predict_config_fails(proj: Path) -> None:
    assert not [j for j in planned_jobs(proj) if j.startswith("predict")]
    (proj / "final.yaml").write_text("predict:\n  model: final\n")
    # predict.model: final scores with the refit model, so the refit is planned first
    jobs = planned_jobs(proj, overlays=(*OVERLAY, "final.yaml"))
    assert jobs.get("refit") == 1 and jobs.get("augment_final") == 1
    assert any(j.startswith("predict") for j in jobs)
    (proj / "gone.yaml").write_text("predict:\n  sets:\n    elsewhere: nope/list.txt\n")
    proc = snakemake(proj, "-n", overlays=("gone.yaml",), check=False)
    assert proc.returncode != 0
    assert "predict.sets.elsewhere: nope/list.txt does not exist" in proc.stdout + proc.stderr


def test_unchanged_sets_do_nothing_and_an_added_video_reruns_its_set_only(proj: Path) -> None:
    assert planned_jobs(proj, overlays=OVERLAY) == {}
    flat = proj / "sets" / "flat"
    src = next((proj / "sets" / "lab").glob("*_real_*.mp4"))
    shutil.copy2(src, flat / "added.mp4")
    # predict_metrics (the table of every set's <set>_metrics.json, from main's results merge)
    # follows any set's rerun; the other set is untouched
    assert planned_jobs(proj, overlays=OVERLAY) == {
        "predict_data[name=flat]": 1,
        "predict[name=flat]": 1,
        "predict_metrics": 1,  # the report's table of every set's metrics
        "provenance": 1,  # runs last, after every result (predict sets included)
    }
    snakemake(proj, overlays=OVERLAY)
    log = (proj / RUN / "logs/predict_data/flat.log").read_text()
    assert "decoded 1 video(s), reused 2 unchanged" in log
    table = pd.read_parquet(proj / RUN / "predict" / "flat.parquet")
    assert sorted(Path(p).name for p in table["path"])[0] == "added.mp4" and len(table) == 3
