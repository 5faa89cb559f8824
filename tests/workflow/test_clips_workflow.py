"""Several clips per video through real Snakemake.

The tiny config with ``data.clips_per_video: 2`` and ``data.frame_stride: 2``: preprocess
writes both windows of every video into one ``(N, 2, T, S, S, 3)`` cache, augment keeps one
window per copy, and each fold's predictions hold one row per validation video whose P(fake)
is the mean over its two windows of the fold's best model. Changing C plans a new decode.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fvc.datasets import input_norm, to_model_input
from fvc.models import build_model
from fvc.video import decode_windows
from tests.workflow.helpers import make_project, planned_jobs, snakemake

pytestmark = pytest.mark.workflow

RUN = Path("runs/tiny")
OVERLAY = "data:\n  clips_per_video: 2\n  frame_stride: 2\n"


def test_two_windows_per_video_through_the_workflow(tmp_path: Path) -> None:
    """Decode, augment and train fold 0 with two windows per video (fold 1 would only repeat
    the same code on other videos)."""
    proj = make_project(tmp_path / "proj")
    (proj / "clips.yaml").write_text(OVERLAY)
    target = str(RUN / "fold_0/metrics.json")
    snakemake(proj, target, overlays=("clips.yaml",))
    run = proj / RUN

    index = pd.read_parquet(run / "data/clips.parquet")
    clips = np.load(run / "data/clips.npy", mmap_mode="r")
    assert clips.shape == (len(index), 2, 4, 16, 16, 3)  # tiny: num_frames 4, size 16
    row = index.iloc[0]
    windows, _ = decode_windows(row["path"], 4, 16, None, clips_per_video=2, frame_stride=2)
    assert np.array_equal(clips[row["clip_row"]], windows)
    assert not np.array_equal(windows[0], windows[1])  # 8-frame demo: frames 0,2,4,6 / 1,3,5,7

    splits = pd.read_parquet(run / "splits.parquet")
    for k in (0,):
        aug = np.load(run / f"fold_{k}/augment/clips.npy", mmap_mode="r")
        man = pd.read_parquet(run / f"fold_{k}/augment/manifest.parquet")
        assert aug.shape == (len(man), 4, 16, 16, 3) and set(man["window"]) <= {0, 1}

        pred = pd.read_parquet(run / f"fold_{k}/predictions.parquet")
        val = splits[splits["fold"] == k]
        assert pred["video_id"].tolist() == val["video_id"].tolist()  # one row per video
        best = torch.load(run / f"fold_{k}/best_model.pt", weights_only=True)
        model = build_model(best["model"])
        model.load_state_dict(best["model_state"])
        model.eval()
        with torch.no_grad():
            x = torch.from_numpy(np.array(clips[val["clip_row"].to_numpy()]))  # (V, 2, T, S, S, 3)
            logits = model(to_model_input(x.flatten(0, 1), input_norm("cpu")))
            per_window = torch.softmax(logits, 1)[:, 1].double().view(len(val), 2).numpy()
        assert np.allclose(pred["prob_fake"], per_window.mean(axis=1), rtol=0, atol=1e-6)

    # another number of windows is another decode (and everything after it)
    (proj / "three.yaml").write_text("data:\n  clips_per_video: 3\n")
    plan = planned_jobs(proj, target, overlays=("clips.yaml", "three.yaml"))
    assert plan["preprocess"] == 1 and plan["train[fold=0]"] == 1, plan
    assert planned_jobs(proj, target, overlays=("clips.yaml",)) == {}


@pytest.mark.parametrize(
    ("overlay", "expect"),
    [
        (
            "data:\n  clips_per_video: 0\n",
            ["0 is less than the minimum of 1", "['clips_per_video']"],
        ),
        ("data:\n  frame_stride: -2\n", ["-2 is less than the minimum of 0", "['frame_stride']"]),
    ],
    ids=["no_window", "negative_stride"],
)
def test_bad_window_keys_are_named_at_start_up(tmp_path: Path, overlay: str, expect: list) -> None:
    proj = make_project(tmp_path / "proj")
    (proj / "bad.yaml").write_text(overlay)
    proc = snakemake(proj, "-n", overlays=("bad.yaml",), check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Error validating config file" in text, text[-3000:]
    for part in expect:
        assert part in text, text[-3000:]
