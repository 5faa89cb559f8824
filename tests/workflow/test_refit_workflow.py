"""The `refit` target through real Snakemake (tiny overlay): never planned by default, built on
request as runs/tiny/final/model.pt, loadable the way fold models are."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest
import torch

from fvc.models import build_model
from tests.workflow.helpers import make_project, planned_jobs, snakemake

pytestmark = pytest.mark.workflow

RUN = Path("runs/tiny")
FINAL = RUN / "final" / "model.pt"


def test_a_fresh_project_plans_no_refit(tmp_path: Path) -> None:
    jobs = planned_jobs(make_project(tmp_path / "proj"))
    assert any(j.startswith("train") for j in jobs)  # the plan is the whole workflow...
    assert not [j for j in jobs if j in ("refit", "augment_final")]  # ...without the refit


def test_refit_builds_the_final_model_on_request(tiny_run_copy: Path) -> None:
    proj = tiny_run_copy  # finished; its dry run plans nothing (checked by the fixture)
    assert planned_jobs(proj, "refit") == {"augment_final": 1, "refit": 1}
    snakemake(proj, str(FINAL))
    final = torch.load(proj / FINAL, weights_only=True)
    model = build_model(final["model"])
    model.load_state_dict(final["model_state"])  # strict: the trained architecture
    best = [
        json.loads((proj / RUN / f"fold_{k}/metrics.json").read_text())["best_epoch"]
        for k in range(2)
    ]
    info = json.loads((proj / RUN / "final/refit.json").read_text())
    assert info["fold_best_epochs"] == best
    assert final["epoch"] == info["epochs"] == max(1, math.floor(statistics.median(best)))
    assert info["n_videos"] == info["n_augmented"] == 24  # every usable video, 1 copy each
    log = (proj / RUN / "logs/refit.log").read_text()
    assert f"final model: {info['epochs']} epochs" in log
    assert (proj / RUN / "checkpoints/final/latest_checkpoint.pt").is_file()
    # built once: neither the default target nor `refit` plans anything now
    assert planned_jobs(proj) == {}
    assert planned_jobs(proj, "refit") == {}
