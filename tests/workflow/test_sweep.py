"""Sweep variants, repeated K-fold, the comparison and provenance, with real Snakemake.

Dry runs check which jobs variants share; one real run (module fixture) trains a baseline and a
variant that cannot learn (``train.lr: 1.0e-9``, one epoch) on 4 folds x 2 repeats, plus a variant
identical to the baseline that reuses its folds.

Why 4 folds x 2 repeats on 64 demo videos and 6 epochs: the corrected test inflates the variance
by 1/(k·r) + n2/n1, and n2/n1 = 1/(k-1) does not shrink with repeats, so k must not be tiny
(with the tiny config's 2 folds the factor is >= 1). The untrained variant is judged on what
"cannot learn" means for every fold: its validation loss stays at ln 2 (0.682 ± 0.009) and its
balanced accuracy near chance (0.57 ± 0.09), against 0.38 ± 0.10 and 0.83 ± 0.07 for the
baseline (measured: p = 0.003 and 0.0002). Its ROC-AUC is no such measure: the random features
of an untrained network already rank the demo's flicker (0.66 ± 0.15 on 16 validation videos
per fold, p = 0.03 against the baseline's 0.96; 0.07 with six epochs at lr 1e-9), so it is
only checked to be lower. Train jobs cost mostly their start-up, so each extra fold costs more
than epochs or videos do.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from fvc.compare import COMPARISON_COLUMNS
from fvc.predict import predict_files
from fvc.splits import assign_folds
from tests.workflow.helpers import make_project, planned_jobs, snakemake

# The module's real run trains 2 x 8 folds: each train job costs mostly its start-up (~5 s alone,
# far more on a loaded machine), so it gets more than the default per-test limit.
RUN_TIMEOUT_S = 2400
pytestmark = [pytest.mark.workflow, pytest.mark.timeout(RUN_TIMEOUT_S + 300)]

EXP = "cmp"
RUN = Path("runs") / EXP
N_SPLITS, N_REPEATS = 4, 2  # 1/(k·r) + n2/n1 = 0.46
COMPARE = f"""experiment: {EXP}
data:
  demo:
    sources: 16
    subtle_share: 0  # every fake visible: base learns (ROC-AUC ~1), an untrained net does not
cv:
  n_splits: {N_SPLITS}
  n_repeats: {N_REPEATS}
train:
  epochs: 6
sweep:
  dead: {{train: {{lr: 1.0e-9, epochs: 1}}}}  # cannot learn; one epoch shows that
  same: {{}}
"""
SHARING = """sweep:
  lr_a: {train: {lr: 0.01}}
  lr_b: {train: {lr: 0.02}}
  big: {data: {size: 24}}
  same: {}
"""


def _overlay(project: Path, name: str, text: str) -> str:
    (project / name).write_text(text)
    return name


def _by_rule(jobs) -> dict[str, int]:
    out: dict[str, int] = {}
    for job, n in jobs.items():
        rule = job.split("[")[0]
        out[rule] = out.get(rule, 0) + n
    return out


def _wildcard_values(jobs, rule: str, name: str) -> set[str]:
    values = set()
    for job in jobs:
        if job.split("[")[0] == rule:
            m = re.search(rf"{name}=([^,\]]+)", job)
            values.add(m.group(1) if m else None)
    return values


@pytest.fixture(scope="module")
def dry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project that is only ever dry-run."""
    return make_project(tmp_path_factory.mktemp("sweep_dry") / "proj")


def test_variants_share_upstream_jobs(dry: Path) -> None:
    jobs = planned_jobs(dry, overlays=(_overlay(dry, "sharing.yaml", SHARING),))
    k = 2  # the tiny config's folds
    assert _by_rule(jobs) == {
        "make_demo": 1,
        "load_data": 1,  # every variant reads the same videos
        "preprocess": 2,  # base/lr_a/lr_b/same decode alike; big (data.size) decodes anew
        "split": 2,
        "augment": 2 * k,  # the two learning rates share base's augmented folds
        "train": 4 * k,  # base, lr_a, lr_b, big; `same` reuses base's folds
        "aggregate": 5,
        "plots": 5,
        "memory_plot": 5,
        "benchmarks": 5,
        "compare": 1,
        "provenance": 1,
    }
    assert _wildcard_values(jobs, "train", "variant") == {"base", "lr_a", "lr_b", "big"}
    assert len(_wildcard_values(jobs, "preprocess", "decode_key")) == 2
    assert len(_wildcard_values(jobs, "augment", "augment_key")) == 2
    # The plan's paths: shared stages under shared/<stage>_<key>/, variants under <variant>/.
    text = snakemake(dry, "-n", overlays=("sharing.yaml",)).stdout
    outputs = set(re.findall(r"runs/tiny/[^\s,]+", text))
    assert {p.split("/")[2] for p in outputs} >= {"shared", "base", "lr_a", "lr_b", "big", "same"}
    assert "runs/tiny/same/kfold_results.feather" in outputs
    assert not any(p.startswith("runs/tiny/same/fold_") for p in outputs)
    assert "runs/tiny/comparison.tsv" in outputs and "runs/tiny/provenance.json" in outputs


def test_without_sweep_paths_are_unchanged(dry: Path) -> None:
    text = snakemake(dry, "-n").stdout
    outputs = set(re.findall(r"runs/tiny/[^\s,]+", text))
    for path in (
        "runs/tiny/data/metadata.parquet",
        "runs/tiny/data/clips.npy",
        "runs/tiny/splits.parquet",
        "runs/tiny/fold_0/augment/clips.npy",
        "runs/tiny/fold_1/metrics.json",
        "runs/tiny/logs/train/fold_1.log",
        "runs/tiny/kfold_results.feather",
        "runs/tiny/plots/roc_curves.png",
        "runs/tiny/provenance.json",
    ):
        assert path in outputs
    assert not [p for p in outputs if re.search(r"/(shared|base|repeat_\d+)/", p)]
    assert "runs/tiny/comparison.tsv" not in outputs


def test_inventory_belongs_to_the_load_key(dry: Path, tmp_path: Path) -> None:
    """With real metadata the dataset inventory is written at DAG-build time into
    the shared load folder that its load_data job reads, once per load key."""
    for label, name in (("real", "r"), ("fake", "f")):
        (tmp_path / "videos" / label).mkdir(parents=True)
        for i in range(3):
            (tmp_path / "videos" / label / f"{name}{i}.mp4").write_bytes(b"x" * (i + 1))
    overlay = f"data:\n  metadata: {tmp_path / 'videos'}\n{SHARING}"
    jobs = planned_jobs(dry, overlays=(_overlay(dry, "inv.yaml", overlay),))
    assert _by_rule(jobs)["load_data"] == 1
    (inventory,) = (dry / "runs/tiny/shared").glob("load_*/data/inventory.tsv")
    assert len(inventory.read_text().splitlines()) == 1 + 6
    assert not (dry / "runs/tiny/data/inventory.tsv").exists()
    text = snakemake(dry, "-n", overlays=("inv.yaml",)).stdout
    assert str(inventory.relative_to(dry)) in text  # an input of load_data
    mtime = inventory.stat().st_mtime_ns
    planned_jobs(dry, overlays=("inv.yaml",))
    assert inventory.stat().st_mtime_ns == mtime, "an unchanged dataset rewrote the inventory"


def test_repeats_are_their_own_jobs(dry: Path) -> None:
    jobs = planned_jobs(dry, overlays=(_overlay(dry, "rep.yaml", "cv:\n  n_repeats: 3\n"),))
    assert _by_rule(jobs)["split"] == 3
    assert _by_rule(jobs)["train"] == 3 * 2
    assert {j for j in jobs if j.startswith("train")} == {
        f"train[repeat={r}, fold={k}]" for r in range(3) for k in range(2)
    }
    text = snakemake(dry, "-n", overlays=("rep.yaml",)).stdout
    assert "runs/tiny/repeat_2/fold_1/metrics.json" in text
    assert "runs/tiny/repeat_0/splits.parquet" in text


@pytest.mark.parametrize(
    ("overlay", "message"),
    [
        (
            "sweep:\n  typo: {train: {lrr: 0.1}}\n",
            "sweep.typo.train: Additional properties are not allowed ('lrr' was unexpected)",
        ),
        ("sweep:\n  neg: {train: {lr: -1}}\n", "sweep.neg.train.lr: -1 is less than"),
        ("sweep:\n  cvx: {cv: {seed: 1}}\n", "('cv' was unexpected)"),
        ("sweep:\n  base: {}\n", "sweep"),
        ("sweep:\n  d: {data: {workers: 3}}\n", "sweep.d.data.workers: cannot differ"),
    ],
)
def test_bad_overlay_fails_naming_the_key(dry: Path, overlay: str, message: str) -> None:
    proc = snakemake(dry, "-n", overlays=(_overlay(dry, "bad.yaml", overlay),), check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    proj = make_project(tmp_path_factory.mktemp("sweep_run") / "proj")
    _overlay(proj, "compare.yaml", COMPARE)
    snakemake(proj, overlays=("compare.yaml",), timeout=RUN_TIMEOUT_S)
    return proj


def _comparison(project: Path) -> pd.DataFrame:
    return pd.read_csv(project / RUN / "comparison.tsv", sep="\t").set_index(["variant", "metric"])


def test_comparison_table(project: Path) -> None:
    table = pd.read_csv(project / RUN / "comparison.tsv", sep="\t")
    assert list(table.columns) == COMPARISON_COLUMNS
    assert list(dict.fromkeys(table["variant"])) == ["base", "dead", "same"]
    assert (table["n_folds"] == N_SPLITS * N_REPEATS).all()
    assert (project / RUN / "comparison.png").read_bytes()[:4] == b"\x89PNG"


def test_a_variant_that_cannot_learn_is_significantly_worse(project: Path) -> None:
    t = _comparison(project)
    loss = t.loc[("dead", "val_loss")]  # lower is better: a worse variant has a higher loss
    assert loss["diff"] > 0 and loss["ci_low"] > 0 and loss["p_value"] < 0.05
    assert not loss["best"] and t.loc[("base", "val_loss"), "best"]
    acc = t.loc[("dead", "balanced_accuracy")]
    assert acc["diff"] < 0 and acc["ci_high"] < 0 and acc["p_value"] < 0.05
    assert not acc["best"] and t.loc[("base", "balanced_accuracy"), "best"]
    assert loss["df"] == acc["df"] == N_SPLITS * N_REPEATS - 1
    assert t.loc[("dead", "roc_auc"), "diff"] < 0


def test_an_identical_variant_reuses_the_folds_and_shows_no_difference(project: Path) -> None:
    t = _comparison(project)
    for metric in ("roc_auc", "accuracy", "f1"):
        same = t.loc[("same", metric)]
        assert same["diff"] == 0 and same["p_value"] == 1.0
        assert same["ci_low"] == same["ci_high"] == 0
    run = project / RUN
    assert not list((run / "same").glob("**/fold_*")), "same should reuse base's trained folds"
    base = pd.read_feather(run / "base/kfold_results.feather")
    same = pd.read_feather(run / "same/kfold_results.feather")
    pd.testing.assert_frame_equal(base, same)


def test_repeats_have_their_own_splits_and_rows(project: Path) -> None:
    run = project / RUN
    (decode,) = (run / "shared").glob("decode_*")
    s0 = pd.read_parquet(decode / "repeat_0/splits.parquet")
    s1 = pd.read_parquet(decode / "repeat_1/splits.parquet")
    assert list(s0["video_id"]) == list(s1["video_id"])
    assert (s0["fold"] != s1["fold"]).any(), "repeat 1 drew the same folds as repeat 0"
    for s in (s0, s1):
        assert (s.groupby("group")["fold"].nunique() == 1).all()
    # The per-stage caches belong to the shared decode folder, one split cache per
    # repeat; nothing is kept at runs/<exp>/cache/.
    assert (decode / "cache/decode").is_dir()
    for r in range(N_REPEATS):
        assert (decode / f"cache/split/repeat_{r}/splits.parquet").is_file()
    assert not (run / "cache").exists()
    # Repeat 0 is plain K-fold with cv.seed: the same folds a run without repeats would use.
    index = pd.read_parquet(decode / "data/clips.parquet")
    plain = assign_folds(index, {"n_splits": N_SPLITS, "seed": 42, "group_column": "group"})
    assert list(plain["fold"]) == list(s0["fold"])
    results = pd.read_feather(run / "base/kfold_results.feather")
    assert list(results["repeat"]) == [
        *(str(r) for r in range(N_REPEATS) for _ in range(N_SPLITS)),
        *[""] * 5,  # mean, std, pooled, pooled_ci_low, pooled_ci_high
    ]
    stat_rows = ["mean", "std", "pooled", "pooled_ci_low", "pooled_ci_high"]
    assert list(results["fold"])[-5:] == stat_rows
    for r in range(N_REPEATS):
        for k in range(N_SPLITS):
            preds = pd.read_parquet(run / f"base/repeat_{r}/fold_{k}/predictions.parquet")
            split = s0 if r == 0 else s1
            assert set(preds["video_id"]) == set(split.loc[split["fold"] == k, "video_id"])


def test_fvc_predict_scores_with_the_base_variants_repeat_0_models(project: Path) -> None:
    """The sweep-with-repeats layout: fvc predict finds (layout.json) and names the models the
    predict rule would use: base's K fold models of repeat 0."""
    videos = sorted((project / "runs/demo_data/videos").glob("*.mp4"))[:2]
    table = predict_files(project / RUN, videos)
    said = table.attrs["scored_with"]
    assert said.startswith(f"the base variant's repeat 0's {N_SPLITS} fold models (")
    assert str(project / RUN / "base" / "repeat_0") in said
    assert [c for c in table.columns if c.startswith("p_")] == [
        *(f"p_fold_{k}" for k in range(N_SPLITS)),
        "p_fake",
    ]
    assert table["p_fake"].notna().all() and (table["reason"] == "").all()


def test_second_run_does_nothing_and_one_fold_reruns_by_target(project: Path) -> None:
    assert planned_jobs(project, overlays=("compare.yaml",)) == {}
    target = str(RUN / "dead/repeat_1/fold_2/metrics.json")
    jobs = planned_jobs(project, "--forcerun", target, overlays=("compare.yaml",))
    assert jobs == {
        "train[variant=dead, repeat=1, fold=2]": 1,
        "aggregate[variant=dead]": 1,
        "plots[variant=dead]": 1,
        "memory_plot[variant=dead]": 1,
        "benchmarks[variant=dead]": 1,
        "compare": 1,
        "provenance": 1,
    }


def test_provenance(project: Path) -> None:
    rec = json.loads((project / RUN / "provenance.json").read_text())
    assert rec["config"]["experiment"] == EXP and rec["config"]["cv"]["n_repeats"] == N_REPEATS
    assert rec["variants"]["dead"]["overlay"] == {"train": {"lr": 1.0e-9, "epochs": 1}}
    assert rec["variants"]["same"]["trained_by"] == "base"
    assert rec["variants"]["dead"]["keys"]["augment"] == rec["variants"]["base"]["keys"]["augment"]
    assert "--configfile" in rec["snakemake"]["command_line"]
    assert rec["snakemake"]["version"]
    assert rec["packages"]["torch"] and rec["python"]["version"] and rec["host"]["hostname"]
    assert isinstance(rec["gpus"], list)
    assert rec["code"]["commit"] is None  # the test project is not a git repository (yet)


def test_report_shows_comparison_and_provenance(project: Path) -> None:
    snakemake(project, "--report", "report.html", overlays=("compare.yaml",))
    html = (project / "report.html").read_text(errors="replace")
    assert "comparison.png" in html and "provenance.json" in html and "comparison.tsv" in html


def _git(project: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(project), *args], check=True, capture_output=True)


def test_a_new_code_version_rewrites_provenance(project: Path) -> None:
    """Last in the module: turns the project into a git repository."""
    (project / ".gitignore").write_text("runs/\n.snakemake/\n*.yaml.bak\nreport.html\n")
    _git(project, "init", "-q")
    _git(project, "add", ".")
    _git(project, "-c", "user.email=t@example.org", "-c", "user.name=t", "commit", "-qm", "v1")
    # Only provenance reruns: the results are untouched, the code version is new.
    assert planned_jobs(project, overlays=("compare.yaml",)) == {"provenance": 1}
    snakemake(project, overlays=("compare.yaml",))
    rec = json.loads((project / RUN / "provenance.json").read_text())
    assert len(rec["code"]["commit"]) == 40 and rec["code"]["dirty"] is False
    with (project / "workflow/report/provenance.rst").open("a") as fh:
        fh.write("\nA local edit.\n")
    assert planned_jobs(project, overlays=("compare.yaml",)) == {"provenance": 1}
    snakemake(project, overlays=("compare.yaml",))
    edited = json.loads((project / RUN / "provenance.json").read_text())
    assert edited["code"]["commit"] == rec["code"]["commit"]
    assert edited["code"]["dirty"] is True and len(edited["code"]["diff_sha256"]) == 64
