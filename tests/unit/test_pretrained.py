"""Pretrained weights: torchvision weight names through torchvision's own cache, the one-line
offline error, the weights' normalisation and the fine-tuning knobs (backbone LR scale,
backbone freezing, LR warm-up), all offline.

Weights are real state dicts written where torchvision's loader looks
(``$TORCH_HOME/hub/checkpoints/<file name of the URL>``); an empty cache meets a real failed
download (``https_proxy`` points at a closed local port, so the test fails the same way with
or without internet).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torchvision.models import video as tv_video

from bench.synthetic import fit_synthetic, fold_inputs, write_synthetic_inputs
from fvc.datasets import MEAN, STD, input_norm, to_model_input
from fvc.memory import MemoryPolicy
from fvc.models import (
    WeightsError,
    WeightsUnavailable,
    backbone_frozen,
    build_model,
    fetch_weights,
    input_normalization,
    set_backbone_frozen,
    torchvision_weights,
    weights_cache_path,
)
from fvc.train import FoldOutputs, FoldTarget, TrainingInterrupted, run_fold
from fvc.train import resume as ckpt
from fvc.train.optim import lr_factor, make_scheduler, param_groups
from fvc.train.state import new_run

R3D_URL = "https://download.pytorch.org/models/r3d_18-b3b3357e.pth"
R3D_FILE = "r3d_18-b3b3357e.pth"


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torchvision cache; downloads fail fast (connection refused), online or not."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    return home


@pytest.fixture(scope="module")
def kinetics_r3d() -> dict[str, torch.Tensor]:
    """A 400-class r3d_18 state dict, as torchvision ships KINETICS400_V1."""
    torch.manual_seed(123)
    return tv_video.r3d_18(weights=None).state_dict()


def place_in_cache(home: Path, state: dict[str, torch.Tensor], name: str = R3D_FILE) -> Path:
    path = home / "hub" / "checkpoints" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


# ---------------------------------------------------------------- weights


def test_names_resolve_to_torchvision_weights_and_paths_stay_paths(tmp_path) -> None:
    r3d = tv_video.R3D_18_Weights.KINETICS400_V1
    for value in ("KINETICS400_V1", "DEFAULT", "R3D_18_Weights.KINETICS400_V1"):
        assert torchvision_weights({"name": "r3d_18", "weights": value}) is r3d
    assert torchvision_weights({"name": "s3d", "weights": "DEFAULT"}) is (
        tv_video.S3D_Weights.KINETICS400_V1
    )
    assert torchvision_weights({"name": "r3d_18", "weights": None}) is None
    assert torchvision_weights({"name": "r3d_18", "weights": str(tmp_path / "w.pt")}) is None
    with pytest.raises(WeightsError, match=r"'IMAGENET1K_V1'.*valid names: KINETICS400_V1, DEF"):
        torchvision_weights({"name": "r3d_18", "weights": "IMAGENET1K_V1"})
    with pytest.raises(WeightsError, match=r"'R3D_18_Weights.KINETICS400_V1'.*'mc3_18'"):
        torchvision_weights({"name": "mc3_18", "weights": "R3D_18_Weights.KINETICS400_V1"})
    with pytest.raises(WeightsError, match=r"model.name 'small3d' \(valid names: none"):
        torchvision_weights({"name": "small3d", "weights": "KINETICS400_V1"})


def test_cached_weights_are_picked_up_and_the_head_replaced(torch_home, kinetics_r3d) -> None:
    path = place_in_cache(torch_home, kinetics_r3d)
    weights = tv_video.R3D_18_Weights.KINETICS400_V1
    assert weights.url == R3D_URL
    assert weights_cache_path(weights) == path.resolve()
    cfg = {"name": "r3d_18", "weights": "KINETICS400_V1", "dropout": 0.2}
    assert fetch_weights(cfg) == path.resolve()
    torch.manual_seed(0)
    model = build_model(cfg)
    own = model.state_dict()
    for key, value in kinetics_r3d.items():
        if not key.startswith("fc."):
            assert torch.equal(own[key], value), key
    assert own["fc.1.weight"].shape == (2, 512) and own["fc.1.bias"].shape == (2,)
    assert not torch.equal(own["fc.1.weight"], kinetics_r3d["fc.weight"][:2])
    assert model(torch.randn(1, 3, 4, 32, 32)).shape == (1, 2)
    assert sorted(p.name for p in path.parent.iterdir()) == [R3D_FILE]  # nothing downloaded


def test_empty_cache_is_one_line_naming_url_and_path(torch_home) -> None:
    cfg = {"name": "r3d_18", "weights": "KINETICS400_V1"}
    expected = torch_home.resolve() / "hub" / "checkpoints" / R3D_FILE
    with pytest.raises(WeightsUnavailable) as info:
        fetch_weights(cfg, progress=False)
    message = str(info.value)
    assert "\n" not in message
    assert R3D_URL in message and str(expected) in message
    assert message.startswith("model.weights: KINETICS400_V1")
    assert not expected.exists()
    assert list(expected.parent.iterdir()) == []  # no partial download left behind
    with pytest.raises(WeightsUnavailable, match="cannot download"):
        build_model(cfg, progress=False)


def test_a_damaged_cached_file_is_named(torch_home) -> None:
    path = place_in_cache(torch_home, {})
    path.write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match=rf"cannot load the cached file {path}.*delete it"):
        build_model({"name": "r3d_18", "weights": "DEFAULT"})


def test_normalisation_comes_from_the_weights_transforms() -> None:
    preset = tv_video.S3D_Weights.KINETICS400_V1.transforms()
    mean, std = input_normalization({"name": "s3d", "weights": "KINETICS400_V1"})
    assert mean == pytest.approx(tuple(preset.mean)) and std == pytest.approx(tuple(preset.std))
    assert input_normalization({"name": "small3d", "weights": None}) == (MEAN, STD)
    x = torch.full((1, 2, 4, 4, 3), 255, dtype=torch.uint8)
    out = to_model_input(x, input_norm("cpu", (0.5, 0.5, 0.5), (0.25, 0.5, 1.0)))
    assert out.shape == (1, 3, 2, 4, 4)
    assert out[0, :, 0, 0, 0].tolist() == [2.0, 1.0, 0.5]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    return write_synthetic_inputs(tmp_path_factory.mktemp("in"), n_videos=16, frames=4, size=16)


def test_offline_fold_stops_at_start_with_one_line_and_writes_nothing(
    torch_home, inputs, tmp_path, caplog
) -> None:
    out, ck = tmp_path / "out", tmp_path / "ck"
    with caplog.at_level(logging.INFO):
        status = run_fold(
            FoldTarget(0, FoldOutputs.in_dir(out)),
            fold_inputs(inputs),
            {"name": "r3d_18", "weights": "KINETICS400_V1"},
            {"epochs": 1, "batch_size": 4},
            {},
            ck,
            threads=1,
        )
    assert status == 1
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0].getMessage()
    assert R3D_URL in errors[0].getMessage() and str(torch_home.resolve()) in errors[0].getMessage()
    assert errors[0].exc_info is None  # no traceback in the log
    assert not out.exists() and not ck.exists()


def test_fold_trains_from_cached_torchvision_weights(torch_home, inputs, tmp_path) -> None:
    torch.manual_seed(7)
    small = tv_video.r3d_18(weights=None)
    place_in_cache(torch_home, small.state_dict())
    cfg = {"name": "r3d_18", "weights": "KINETICS400_V1", "dropout": 0.0}
    train = {"epochs": 1, "batch_size": 8, "lr": 1e-3, "freeze_backbone_epochs": 1}
    metrics = fit_synthetic(inputs, tmp_path, cfg, train)
    assert metrics["epochs_trained"] == 1
    best = torch.load(tmp_path / "out" / "best_model.pt", weights_only=True)
    assert best["model"]["weights"] == "KINETICS400_V1"
    # the backbone was frozen for the only epoch: the published model keeps the file's tensors
    for key, value in small.state_dict().items():
        if key.endswith(("weight", "bias")) and not key.startswith("fc."):
            assert torch.equal(best["model_state"][key], value), key


# ---------------------------------------------------------------- fine-tuning knobs


def small3d_weights(tmp_path: Path) -> tuple[str, dict[str, torch.Tensor]]:
    """A small3d state dict on disk: the known starting point of a fold."""
    torch.manual_seed(3)
    state = build_model({"name": "small3d"}).state_dict()
    torch.save(state, tmp_path / "start.pt")
    return str(tmp_path / "start.pt"), state


def fit(inputs: dict, root: Path, model: dict, train: dict, **kw) -> dict:
    train = {"batch_size": 4, "seed": 1, "checkpoint_every_n_batches": 2, **train}
    return fit_synthetic(inputs, root, model, train, **kw)


def params_of(state: dict[str, torch.Tensor], head: bool) -> dict[str, torch.Tensor]:
    """The parameters (not BatchNorm buffers) of small3d's head or backbone in ``state``."""
    names = {n for n, _ in build_model({"name": "small3d"}).named_parameters()}
    return {k: v for k, v in state.items() if k in names and k.startswith("head.") == head}


def test_frozen_backbone_does_not_change_in_the_first_epochs_and_does_after(
    inputs, tmp_path
) -> None:
    path, start = small3d_weights(tmp_path)
    train = {"epochs": 2, "freeze_backbone_epochs": 1, "keep_epoch_checkpoints": 2}
    fit(inputs, tmp_path, {"name": "small3d", "weights": path}, train)
    after = {e: ckpt.load_checkpoint(ckpt.epoch_path(tmp_path / "ck", e)) for e in (1, 2)}
    e1, e2 = after[1]["model_state"], after[2]["model_state"]
    for k, v in params_of(start, head=False).items():
        assert torch.equal(e1[k], v), f"{k} changed while frozen"
        assert not torch.equal(e2[k], v), f"{k} did not train after unfreezing"
    for k, v in params_of(start, head=True).items():
        assert not torch.equal(e1[k], v), f"head {k} did not train"
    assert backbone_frozen(train, 1) and not backbone_frozen(train, 2)


def test_backbone_lr_is_lr_times_scale_and_off_is_one_group() -> None:
    model = build_model({"name": "r3d_18"})
    tc = {
        "lr": 0.01,
        "weight_decay": 0.0,
        "batch_size": 4,
        "precision": "off",
        "class_weights": "none",
        "scheduler": "cosine",
        "epochs": 3,
    }
    labels = np.array([0, 1])
    run = new_run(
        model,
        {**tc, "backbone_lr_scale": 0.1},
        torch.device("cpu"),
        labels,
        MemoryPolicy.of({}),
        None,
        input_norm("cpu"),
    )
    head, backbone = run.optimizer.param_groups
    assert head["lr"] == pytest.approx(0.01) and backbone["lr"] == pytest.approx(0.001)
    assert {id(p) for p in head["params"]} == {id(p) for p in model.fc.parameters()}
    n_all = len(list(model.parameters()))
    assert len(head["params"]) + len(backbone["params"]) == n_all
    assert len(param_groups(model, {**tc, "backbone_lr_scale": 1.0})) == 1
    set_backbone_frozen(model, True)
    assert not model.stem[0].weight.requires_grad and model.fc[1].weight.requires_grad
    set_backbone_frozen(model, False)
    assert all(p.requires_grad for p in model.parameters())


def test_warmup_ramps_then_follows_the_schedule(inputs, tmp_path) -> None:
    tc = {"lr": 0.01, "epochs": 4, "warmup_epochs": 2, "scheduler": "cosine"}
    assert [lr_factor(tc, e) for e in range(4)] == pytest.approx([1 / 3, 2 / 3, 1.0, 0.5])
    assert [lr_factor({**tc, "scheduler": "none"}, e) for e in range(4)] == pytest.approx(
        [1 / 3, 2 / 3, 1.0, 1.0]
    )
    # through a real fold: history.csv logs the head's LR; the backbone's stays lr * scale
    train = {**tc, "backbone_lr_scale": 0.5, "keep_epoch_checkpoints": 4}
    fit(inputs, tmp_path, {"name": "small3d"}, train)
    history = pd.read_csv(tmp_path / "out" / "history.csv")
    assert history["lr"].tolist() == pytest.approx([0.01 / 3, 0.02 / 3, 0.01, 0.005])
    for e in range(1, 5):
        groups = ckpt.load_checkpoint(ckpt.epoch_path(tmp_path / "ck", e))["optimizer_state"]
        head, backbone = (g["lr"] for g in groups["param_groups"])
        assert backbone == pytest.approx(0.5 * head)
    # without warm-up the schedule is the one it always was
    opt = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters(), lr=0.01)
    assert isinstance(
        make_scheduler(opt, {**tc, "warmup_epochs": 0}), torch.optim.lr_scheduler.CosineAnnealingLR
    )


def test_freezing_and_warmup_survive_a_resume_at_every_step(inputs, tmp_path) -> None:
    """Stop after every single optimizer step and resume: the same weights as one run."""
    path, _ = small3d_weights(tmp_path)
    model = {"name": "small3d", "weights": path}
    train = {
        "epochs": 2,
        "freeze_backbone_epochs": 1,
        "warmup_epochs": 1,
        "backbone_lr_scale": 0.1,
        "time_margin_s": 30,
    }
    fit(inputs, tmp_path / "ref", model, train)
    reference = ckpt.load_checkpoint(tmp_path / "ref" / "ck" / ckpt.LATEST)["model_state"]
    stops = 0
    while not (tmp_path / "cut" / "out" / "metrics.json").exists():
        try:  # the time budget is already used up: one step, checkpoint, stop
            fit(
                inputs, tmp_path / "cut", model, train, runtime_min=1.0, started_at=time.time() - 30
            )
        except TrainingInterrupted:
            stops += 1
        assert stops < 40
    assert stops >= 8  # 2 epochs of 4 batches: resumed mid-epoch, frozen and not
    resumed = ckpt.load_checkpoint(tmp_path / "cut" / "ck" / ckpt.LATEST)["model_state"]
    assert resumed.keys() == reference.keys()
    for k in reference:
        assert torch.equal(resumed[k], reference[k]), k
    events = [
        json.loads(x) for x in (tmp_path / "cut" / "out" / "memory.jsonl").read_text().splitlines()
    ]
    assert sum(e["event"] == "stage_start" and e["resumed"] for e in events) == stops
