"""The library as users install it: a wheel in a fresh venv, no checkout on ``sys.path``.

The wheel is built from this checkout and installed with ``--no-deps`` into a new venv whose
dependencies come from the project venv through a plain path entry (reinstalling 6 GB of
PyTorch per test run would prove nothing more). The checkout is on no path of that venv and
the commands run from a folder outside it, so the package must find everything it needs
(its config schema above all) inside the installed wheel.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import yaml

import fvc
from bench.synthetic import write_synthetic_inputs
from tests.workflow.helpers import REPO

pytestmark = pytest.mark.workflow


def run(cmd: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bin/ of a fresh venv with the fvc wheel installed (not editable)."""
    root = tmp_path_factory.mktemp("installed")
    dist = root / "dist"
    build = run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(dist),
            str(REPO),
        ],
        cwd=root,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = dist.glob("fvc-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "fvc/config.schema.yaml" in names and "fvc/train/loop.py" in names
    assert not any(n.startswith(("workflow/", "tests/", "bench/")) for n in names)
    venv = root / "venv"
    made = run([sys.executable, "-m", "venv", str(venv)], cwd=root)
    assert made.returncode == 0, made.stderr
    py = venv / "bin" / "python"
    site = run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], root)
    # the project venv's packages as a plain path entry: its .pth files (the editable fvc)
    # are not processed, so only the wheel provides fvc
    deps = sysconfig.get_paths()["purelib"]
    Path(site.stdout.strip(), "project_deps.pth").write_text(deps + "\n")
    inst = run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)], root)
    assert inst.returncode == 0, inst.stderr[-3000:]
    return venv / "bin"


def test_the_installed_package_finds_its_schema_outside_the_checkout(installed, tmp_path):
    code = (
        "import fvc, fvc.config, fvc.train\n"
        "print(fvc.__file__)\n"
        "print(fvc.config.SCHEMA_PATH)\n"
        "print(fvc.config.TrainConfig.of(None).epochs, fvc.__version__)\n"
    )
    out = run([str(installed / "python"), "-c", code], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    module, schema, defaults = out.stdout.split("\n")[:3]
    venv = str(installed.parent)
    assert module.startswith(venv) and schema.startswith(venv), out.stdout
    assert str(REPO) not in out.stdout
    assert defaults.split() == ["5", fvc.__version__]


def test_fvc_help_train_and_predict_from_the_installed_command(
    installed, tmp_path, finished_tiny_run
):
    cli = str(installed / "fvc")
    help_ = run([cli, "--help"], cwd=tmp_path)
    assert help_.returncode == 0 and "train" in help_.stdout and "predict" in help_.stdout

    # fvc train: one fold of a tiny synthetic dataset, same artifacts as the train rule
    inputs = write_synthetic_inputs(tmp_path / "data", n_videos=12, n_folds=2)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"train": {"epochs": 1, "batch_size": 4}}))
    fold = inputs["folds"][0]
    train = run(
        [
            cli,
            "train",
            "--config",
            str(cfg),
            "--fold",
            "0",
            "--clips",
            str(inputs["clips"]),
            "--index",
            str(inputs["index"]),
            "--splits",
            str(inputs["splits"]),
            "--aug-clips",
            str(fold["aug_clips"]),
            "--aug-manifest",
            str(fold["aug_manifest"]),
            "--out-dir",
            str(tmp_path / "out"),
            "--checkpoint-dir",
            str(tmp_path / "ck"),
            "--threads",
            "1",
        ],
        cwd=tmp_path,
    )
    assert train.returncode == 0, train.stderr[-3000:]
    for name in ("metrics.json", "predictions.parquet", "history.csv", "best_model.pt"):
        assert (tmp_path / "out" / name).is_file(), name

    # fvc predict: two demo videos with the finished tiny run's fold models
    videos = sorted((finished_tiny_run / "runs" / "demo_data" / "videos").glob("*.mp4"))[:2]
    pred = run(
        [cli, "predict", str(finished_tiny_run / "runs" / "tiny"), *map(str, videos)], cwd=tmp_path
    )
    assert pred.returncode == 0, pred.stderr[-3000:]
    for video in videos:
        assert video.name in pred.stdout
    assert "threshold:" in pred.stdout
