"""Bad training settings through the library (``fit_fold``), as the CLI path meets them.

Snakemake's schema rejects these before any job runs (tests/workflow/test_config_errors.py);
``fit_fold`` is also called directly (CLI, bench), so it checks them itself, and it refuses to
publish a model whose predictions are not finite.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bench.synthetic import fit_synthetic
from fvc.models import build_model
from fvc.train import FoldInputs, TrainingFailed

SMALL = {"name": "small3d", "dropout": 0.0}
TRAIN = {"epochs": 1, "batch_size": 4, "seed": 0}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> FoldInputs:
    """Fold 0 of 16 tiny clips (docs/artifacts.md formats), with no augmented copies."""
    root = tmp_path_factory.mktemp("in")
    n = 16
    rng = np.random.default_rng(0)
    np.save(root / "clips.npy", rng.integers(0, 255, (n, 4, 16, 16, 3), dtype=np.uint8))
    ids = [f"v{i:05d}" for i in range(n)]
    index = pd.DataFrame(
        {
            "video_id": ids,
            "path": [f"/videos/{v}.mp4" for v in ids],
            "label": (np.arange(n) % 2).astype(np.int8),
            "group": ids,
            "clip_row": np.arange(n),
            "padded": False,
        }
    )
    index.to_parquet(root / "clips.parquet")
    index.drop(columns="padded").assign(fold=(np.arange(n) // 2) % 2).to_parquet(
        root / "splits.parquet"
    )
    np.save(root / "aug.npy", np.zeros((0, 4, 16, 16, 3), np.uint8))
    pd.DataFrame(
        {
            "aug_row": pd.Series([], dtype="int64"),
            "video_id": pd.Series([], dtype="str"),
            "clip_row": pd.Series([], dtype="int64"),
            "copy": pd.Series([], dtype="int64"),
            "label": pd.Series([], dtype="int8"),
            "ops": pd.Series([], dtype="str"),
        }
    ).to_parquet(root / "manifest.parquet")
    return FoldInputs(
        root / "clips.npy",
        root / "clips.parquet",
        root / "splits.parquet",
        root / "aug.npy",
        root / "manifest.parquet",
    )


def _fit(inputs: FoldInputs, root: Path, train: dict, model: dict = SMALL) -> dict:
    return fit_synthetic(inputs, root, model, train)


def test_reference_settings_train(inputs: FoldInputs, tmp_path: Path) -> None:
    """The fixture itself trains (so the failures below are the settings', not the data's)."""
    assert _fit(inputs, tmp_path, TRAIN)["fold"] == 0
    assert (tmp_path / "out/metrics.json").exists()


@pytest.mark.parametrize(
    ("train", "message"),
    [
        ({"scheduler": "linear"}, r"train\.scheduler: 'linear' is not one of"),
        ({"seed": -1}, r"train\.seed: -1 must be >= 0"),
    ],
    ids=["unknown_scheduler", "negative_seed"],
)
def test_bad_train_setting_is_named_and_nothing_is_published(
    inputs: FoldInputs, tmp_path: Path, train: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        _fit(inputs, tmp_path, {**TRAIN, **train})
    assert not (tmp_path / "out/metrics.json").exists()
    assert not (tmp_path / "out/best_model.pt").exists()


def test_non_finite_predictions_fail_the_fold(inputs: FoldInputs, tmp_path: Path) -> None:
    """A model whose output is NaN (NaN weights from model.weights) cannot become best_model."""
    nan_state = {
        k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
        for k, v in build_model(SMALL).state_dict().items()
    }
    torch.save(nan_state, tmp_path / "nan.pt")
    with pytest.raises(TrainingFailed, match=r"epoch 1 produced non-finite predictions"):
        _fit(inputs, tmp_path, TRAIN, {**SMALL, "weights": str(tmp_path / "nan.pt")})
    assert not (tmp_path / "out/metrics.json").exists()
    assert not (tmp_path / "out/predictions.parquet").exists()
