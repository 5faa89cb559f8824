"""Torchvision weights through real Snakemake, offline.

An empty torchvision cache: the train jobs stop at start-up with one log line naming the URL
and the file to place, and leave no output and no checkpoint directory. The same state dict
placed at that path: the rerun trains from it (r3d_18, frozen backbone, warm-up, backbone LR
scale) on Kinetics-style centre crops (``data.resize: short_side_crop``).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torchvision.models import video as tv_video

from fvc.video import decode_clip
from tests.workflow.helpers import make_project, snakemake

pytestmark = pytest.mark.workflow

RUN = Path("runs/tiny")
URL = "https://download.pytorch.org/models/r3d_18-b3b3357e.pth"
OVERLAY = """\
data:
  resize: short_side_crop
model:
  name: r3d_18
  weights: KINETICS400_V1
train:
  batch_size: 8
  freeze_backbone_epochs: 1
  warmup_epochs: 1
  backbone_lr_scale: 0.1
"""


def test_kinetics_weights_offline_then_from_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # a real, failing download, online or not
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    proj = make_project(tmp_path / "proj")
    (proj / "pretrained.yaml").write_text(OVERLAY)
    cached = home.resolve() / "hub" / "checkpoints" / "r3d_18-b3b3357e.pth"

    proc = snakemake(proj, overlays=("pretrained.yaml",), check=False)
    assert proc.returncode != 0
    run = proj / RUN
    logs = sorted((run / "logs" / "train").glob("fold_*.log"))
    assert logs, proc.stderr[-3000:]
    for log in logs:
        text = log.read_text()
        errors = [line for line in text.splitlines() if " ERROR " in line]
        assert len(errors) == 1, text
        assert URL in errors[0] and f"place the file at {cached} " in errors[0]
        assert "Traceback" not in text
    for k in range(2):
        assert not list((run / f"fold_{k}").glob("*.json")), "a failed fold left outputs"
        assert not (run / f"fold_{k}" / "best_model.pt").exists()
    assert not (run / "checkpoints").exists()
    assert not cached.exists()

    # data.resize reached preprocess: the cached clips are the centre crops
    index = pd.read_parquet(run / "data/clips.parquet")
    clips = np.load(run / "data/clips.npy", mmap_mode="r")
    row = index.iloc[0]
    crop, _ = decode_clip(row["path"], 4, 16, resize="short_side_crop")
    letterbox, _ = decode_clip(row["path"], 4, 16)
    assert np.array_equal(clips[row["clip_row"]], crop)
    assert not np.array_equal(crop, letterbox)

    torch.manual_seed(0)
    kinetics = tv_video.r3d_18(weights=None).state_dict()
    cached.parent.mkdir(parents=True, exist_ok=True)
    torch.save(kinetics, cached)
    # one fold is enough to show the cached weights reach training (r3d_18 is slow on a CPU)
    snakemake(proj, str(RUN / "fold_0/metrics.json"), overlays=("pretrained.yaml",))
    best = torch.load(run / "fold_0/best_model.pt", weights_only=True)
    assert best["model"]["weights"] == "KINETICS400_V1"
    assert best["model_state"]["fc.1.weight"].shape == (2, 512)
    history = pd.read_csv(run / "fold_0/history.csv")
    assert history["lr"].tolist() == pytest.approx([0.003 / 2, 0.003])  # warm-up
    text = (run / "logs" / "train" / "fold_0.log").read_text()
    assert re.search(r"loaded \d+ tensors from R3D_18_Weights\.KINETICS400_V1", text)
