"""Results of a real tiny workflow run: the metrics files, the figures, and the HTML report as a
real headless Chromium renders it; plus a run on shuffled labels that must score at chance.
"""

from __future__ import annotations

import fcntl
import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fvc.metrics import binary_metrics, choose_threshold
from tests.workflow.conftest import copy_run
from tests.workflow.helpers import REPO, make_project, snakemake

pytestmark = pytest.mark.workflow

RUN = Path("runs/tiny")
N_SPLITS = 2
DRIVER = REPO / "tests" / "workflow" / "report_driver.js"
#: The lock tests/slurm/cluster.sh takes around apt-get too.
APT_LOCK = "/tmp/fvc-tests-apt.lock"

#: Figures: name -> size in pixels (width, height) of the PNG (inches x fvc.plots.DPI), with
#: the tiny run's 2 folds and 6 benchmark files (load_data, preprocess, 2 augment, 2 train).
FIGURES = {
    "roc_curves": (500, 500),
    "pr_curves": (500, 500),
    "calibration": (500, 600),
    "confusion_matrix": (450, 400),
    "training_curves": (1000, 400),
    "memory": (800, round((2.2 * N_SPLITS + 0.6) * 100)),
    "benchmarks": (1000, round((0.35 * 6 + 1.5) * 100)),
}
#: Report sections: (category, subcategory) -> the files listed there and a phrase of each
#: file's caption (shown in the result's info view).
SECTIONS = {
    ("Results", "Metrics"): {
        "summary.json": "bootstrap 95 %",
        "kfold_results.html": "The fold table",
        "plots/confusion_matrix.png": "Confusion matrix of all out-of-fold predictions",
    },
    ("Results", "Curves"): {
        "plots/roc_curves.png": "Out-of-fold ROC curves",
        "plots/pr_curves.png": "precision-recall curves",
    },
    ("Results", "Calibration"): {"plots/calibration.png": "Reliability diagram"},
    ("Training", "Curves"): {"plots/training_curves.png": "Per-epoch training"},
    ("Training", "Memory"): {"plots/memory.png": "Memory timeline of each fold"},
    ("Resources", "Run time and memory"): {
        "benchmarks.tsv": "Wall time, CPU time and peak resident memory",
        "plots/benchmarks.png": "Wall time, CPU time and peak resident memory",
    },
}


@pytest.fixture(scope="module")
def project(finished_tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This module's copy of the finished tiny run (the report is written into it)."""
    return copy_run(finished_tiny_run, tmp_path_factory.mktemp("results") / "proj")


def test_metrics_files_hold_the_new_metrics_with_integer_counts(project: Path) -> None:
    run = project / RUN
    table = pd.read_feather(run / "kfold_results.feather")
    folds = [str(k) for k in range(N_SPLITS)]
    assert list(table["fold"]) == [
        *folds,
        "mean",
        "std",
        "pooled",
        "pooled_ci_low",
        "pooled_ci_high",
    ]
    for col in ("tn", "fp", "fn", "tp", "n_val", "best_epoch"):
        assert pd.api.types.is_integer_dtype(table[col]), f"{col} is {table[col].dtype}"
    stats = table.set_index("fold")
    splits = pd.read_parquet(run / "splits.parquet")
    assert stats.loc["pooled", ["tn", "fp", "fn", "tp"]].sum() == len(splits)
    for name in ("average_precision", "eer", "eer_threshold", "log_loss", "brier"):
        assert stats.loc[folds, name].notna().all(), name
    summary = json.loads((run / "summary.json").read_text())
    preds = pd.concat(pd.read_parquet(run / f"fold_{k}/predictions.parquet") for k in range(2))
    thr = choose_threshold(preds["label"], preds["prob_fake"], "eer")  # the default
    assert summary["threshold"] == {"method": "eer", "value": pytest.approx(thr)}
    pooled = summary["pooled_out_of_fold"]
    want = binary_metrics(preds["label"], preds["prob_fake"], thr)
    assert {k: pooled[k] for k in ("tn", "fp", "fn", "tp")} == {
        k: want[k] for k in ("tn", "fp", "fn", "tp")
    }
    assert all(type(pooled[k]) is int for k in ("tn", "fp", "fn", "tp"))
    # The tiny config groups clips by source: the intervals resample groups.
    assert summary["ci95"]["unit"] == "group" and summary["ci95"]["resamples"] == 1000
    for name in ("roc_auc", "average_precision", "accuracy"):
        lo, hi = summary["ci95"][name]
        assert lo <= pooled[name] <= hi, name


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_each_figure_decodes_to_its_size_and_is_not_blank(project: Path, name: str) -> None:
    with Image.open(project / RUN / f"plots/{name}.png") as img:
        img.load()
        pixels = np.asarray(img.convert("RGB"))
    assert (pixels.shape[1], pixels.shape[0]) == FIGURES[name]
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20, "blank figure"
    assert 0.02 < (pixels < 250).any(axis=2).mean() < 0.9


def test_benchmark_table_lists_every_benchmarked_job(project: Path) -> None:
    table = pd.read_csv(project / RUN / "benchmarks.tsv", sep="\t")
    jobs = {"load_data", "preprocess"} | {
        f"{rule}/fold_{k}" for rule in ("augment", "train") for k in range(N_SPLITS)
    }
    assert set(table["job"]) == jobs
    assert (table["seconds"] > 0).all() and (table["cpu_seconds"] >= 0).all()
    train = table[table["job"].str.startswith("train")]
    assert (train["max_rss_mb"] > 100).all()  # a torch process is never this small


def _chromium() -> str:
    """Debian's chromium, installed with apt-get (as tests/slurm/cluster.sh installs SLURM)."""
    found = shutil.which("chromium")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium is not installed and cannot be (needs root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    apt = ["apt-get", "-o", "DPkg::Lock::Timeout=600"]
    install = [*apt, "install", "-y", "-q", "--no-install-recommends", "chromium"]
    # one apt-get user at a time: under pytest -n the SLURM fixture may be installing too
    with open(APT_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for cmd in ([*apt, "update", "-q"], install):
            if shutil.which("chromium"):
                break
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
            if proc.returncode != 0:
                pytest.skip(f"{' '.join(cmd)} failed: {(proc.stdout + proc.stderr)[-500:]}")
    return shutil.which("chromium") or pytest.skip("apt-get installed no chromium binary")


@pytest.fixture(scope="module")
def rendered(project: Path) -> dict[str, Any]:
    """What Chromium rendered of report.html, view by view (see report_driver.js)."""
    browser = _chromium()
    snakemake(project, "--report", "report.html")
    page = (project / "report.html").read_text()
    cut = page.rindex("</body>")
    driven = project / "report_driven.html"
    driven.write_text(page[:cut] + f"<script>{DRIVER.read_text()}</script>" + page[cut:])
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",  # we run as root in a container
        "--disable-gpu",
        "--virtual-time-budget=120000",
        "--dump-dom",
        driven.as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    found = re.findall(r'<pre id="fvc-check">(\{.*?)</pre>', proc.stdout, re.S)
    assert found, f"the driver wrote no record; chromium said:\n{proc.stderr[-3000:]}"
    record = json.loads(html.unescape(found[-1]))
    assert record["errors"] == []
    return record


def test_report_menu_lists_every_category(rendered: dict[str, Any]) -> None:
    home = rendered["views"]["home"]
    for category in ("Results", "Training", "Resources", "Folds"):
        assert category in home.splitlines(), f"{category} missing from the menu"
    assert "Stratified 2-fold cross-validation" in home


@pytest.mark.parametrize(("category", "subcategory"), sorted(SECTIONS))
def test_report_section_lists_its_results_with_captions(
    rendered: dict[str, Any], category: str, subcategory: str
) -> None:
    view = rendered["views"].get(f"subcategory {category}/{subcategory}")
    assert view is not None, f"no section {category}/{subcategory}: {sorted(rendered['views'])}"
    for name, phrase in SECTIONS[(category, subcategory)].items():
        path = f"{RUN}/{name}"
        assert path in view, f"{path} not listed in {category}/{subcategory}"
        assert phrase in rendered["views"][f"result {path}"], f"caption of {name} not shown"


def test_report_figures_render_at_their_size(rendered: dict[str, Any]) -> None:
    for name, size in FIGURES.items():
        shown = rendered["shown"][f"{RUN}/plots/{name}.png"]
        pngs = [i for i in shown if i["src"].startswith("data:image/png")]
        assert [(i["width"], i["height"]) for i in pngs] == [size], name
    frames = rendered["shown"][f"{RUN}/kfold_results.html"]
    assert [f["src"][:14] for f in frames] == ["data:text/html"]


@pytest.fixture(scope="module")
def shuffled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo set with its labels permuted: nothing real is left to learn."""
    proj = make_project(tmp_path_factory.mktemp("shuffled") / "proj")
    overlay = (
        "data:\n  demo:\n    sources: 30\n    clips_per_source: 2\n    frames: 8\n    size: 32\n"
    )
    (proj / "more.yaml").write_text(overlay)
    snakemake(proj, "runs/demo_data/metadata.csv", overlays=("more.yaml",))
    table = pd.read_csv(proj / "runs/demo_data/metadata.csv")
    rng = np.random.default_rng(0)
    table["label"] = rng.permutation(table["label"].to_numpy())
    table.to_csv(proj / "runs/demo_data/shuffled.csv", index=False)
    (proj / "shuffled.yaml").write_text(
        "experiment: shuffled\ndata:\n  metadata: runs/demo_data/shuffled.csv\n"
    )
    # only the pooled metrics are read: no plots, report or provenance jobs
    snakemake(proj, "runs/shuffled/summary.json", overlays=("more.yaml", "shuffled.yaml"))
    return proj


def test_shuffled_labels_score_at_chance(shuffled: Path) -> None:
    summary = json.loads((shuffled / "runs/shuffled/summary.json").read_text())
    assert summary["n_videos"] == 120
    auc = summary["pooled_out_of_fold"]["roc_auc"]
    assert 0.35 <= auc <= 0.65, f"pooled out-of-fold ROC-AUC {auc:.3f} on shuffled labels"
