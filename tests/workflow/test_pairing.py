"""Pairing through real Snakemake: a variant that changes the dataset is not tested as pairs.

The baseline trains on the demo videos; ``fewer`` reads a metadata table that leaves four of
them out (another ``data.metadata``: its own load, decode and split, so its fold k validates
other videos); ``lr`` only changes the learning rate (the baseline's splits). comparison.tsv
must test ``lr`` with the corrected paired t-test and mark ``fewer`` as unpaired, with no test.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.workflow.helpers import make_project, snakemake

pytestmark = pytest.mark.workflow

OVERLAY = """experiment: pairing
train:
  epochs: 1
sweep:
  fewer: {data: {metadata: subset.csv}}
  lr: {train: {lr: 0.01}}
"""


def test_a_variant_with_other_videos_is_compared_unpaired_and_marked(tmp_path: Path) -> None:
    project = make_project(tmp_path / "proj")
    snakemake(project, "runs/demo_data/metadata.csv")
    demo = pd.read_csv(project / "runs/demo_data/metadata.csv")
    subset = demo.groupby("label").apply(lambda g: g.iloc[2:], include_groups=False)
    subset = subset.reset_index(level=0).reset_index(drop=True)
    subset.assign(path="runs/demo_data/" + subset["path"]).to_csv(
        project / "subset.csv", index=False
    )
    (project / "pairing.yaml").write_text(OVERLAY)
    snakemake(project, "runs/pairing/comparison.tsv", overlays=("pairing.yaml",))

    table = pd.read_csv(project / "runs/pairing/comparison.tsv", sep="\t")
    auc = table[table["metric"] == "roc_auc"].set_index("variant")
    assert auc.loc["lr", "pairing"] == "paired" and pd.notna(auc.loc["lr", "t_stat"])
    fewer = auc.loc["fewer"]
    assert (
        fewer["pairing"].startswith("unpaired: ") and "validation sets differ" in fewer["pairing"]
    )
    assert pd.isna(fewer["p_value"]) and pd.isna(fewer["t_stat"])
    log = (project / "runs/pairing/logs/compare.log").read_text()
    assert "fewer: unpaired:" in log and "lr: unpaired" not in log
    # the identity is recorded with each fold's metrics
    metrics = pd.read_json(project / "runs/pairing/fewer/fold_0/metrics.json", typ="series")
    base = pd.read_json(project / "runs/pairing/base/fold_0/metrics.json", typ="series")
    assert len(metrics["val_set"]) == 16 and metrics["val_set"] != base["val_set"]
