"""This workflow used from another one through Snakemake's ``module`` directive.

The second workflow lives in a temporary folder that holds nothing of this checkout but a
config: its Snakefile points ``module fvc: snakefile:`` at the checkout's Snakefile and passes
its own config (another experiment name, the tiny overlay), as snakedeploy sets it up. The
demo then runs to ``kfold_results.feather`` with this checkout's rules, scripts and schema.
"""

from __future__ import annotations

import subprocess

import pandas as pd
import pytest
import yaml

from fvc.sweep import merge
from tests.workflow.helpers import REPO, SNAKEMAKE, TINY

pytestmark = pytest.mark.workflow

OUTER_SNAKEFILE = """\
configfile: "config/config.yaml"


module fvc:
    snakefile:
        "{snakefile}"
    config:
        config


use rule * from fvc as fvc_*
"""


def test_the_demo_runs_as_a_module_of_another_workflow(tmp_path) -> None:
    outer = tmp_path / "analysis"
    (outer / "config").mkdir(parents=True)
    shipped = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg = merge(shipped, yaml.safe_load(TINY.read_text()))
    cfg["experiment"] = "as_module"
    (outer / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    (outer / "Snakefile").write_text(OUTER_SNAKEFILE.format(snakefile=REPO / "Snakefile"))
    target = "runs/as_module/kfold_results.feather"

    proc = subprocess.run(
        [SNAKEMAKE, "--cores", "2", target],
        cwd=outer,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    assert "rule fvc_train" in proc.stdout + proc.stderr  # the module's rules, renamed
    table = pd.read_feather(outer / target)
    assert table["fold"].tolist()[:2] == ["0", "1"] and "mean" in table["fold"].tolist()
    assert (outer / "runs/as_module/fold_1/best_model.pt").is_file()
    # nothing of the workflow was copied: the rules, scripts and schema came from the checkout
    assert sorted(p.name for p in outer.iterdir()) == [".snakemake", "Snakefile", "config", "runs"]
    again = subprocess.run(
        [SNAKEMAKE, "--cores", "1", "-n", target],
        cwd=outer,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
