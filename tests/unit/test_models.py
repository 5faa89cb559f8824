"""Model registry: every architecture builds offline, takes clips, gives two logits."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torchvision.models import video as tv_video

from fvc.models import REGISTRY, build_model, count_parameters


def test_small3d_is_cpu_sized_and_any_clip_size_works() -> None:
    model = build_model({"name": "small3d", "dropout": 0.3}).eval()
    assert 60_000 < count_parameters(model) < 80_000
    for shape in [(2, 3, 8, 64, 64), (1, 3, 4, 16, 16), (3, 3, 1, 8, 8)]:
        assert model(torch.randn(shape)).shape == (shape[0], 2)
    assert model.dropout.p == 0.3


@pytest.mark.parametrize("name", [n for n in REGISTRY if n != "small3d"])
def test_torchvision_models_build_offline_with_two_logits(name: str) -> None:
    torch.manual_seed(0)
    model = build_model({"name": name, "dropout": 0.1}).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 8, 32, 32))  # s3d needs adaptive pooling for this size
    assert out.shape == (1, 2)


def test_unknown_model_names_the_valid_ones() -> None:
    valid = r"model.name: 'resnet50' is not one of .*small3d.*r3d_18.*mc3_18"
    with pytest.raises(ValueError, match=valid):
        build_model({"name": "resnet50"})


def test_weights_file_roundtrip_and_best_model_format(tmp_path) -> None:
    torch.manual_seed(1)
    src = build_model({"name": "small3d"})
    torch.save(src.state_dict(), tmp_path / "w.pt")
    torch.save({"model_state": src.state_dict(), "epoch": 3}, tmp_path / "best_model.pt")
    for f in ("w.pt", "best_model.pt"):
        torch.manual_seed(2)
        loaded = build_model({"name": "small3d", "weights": str(tmp_path / f)})
        for k, v in src.state_dict().items():
            assert torch.equal(v, loaded.state_dict()[k]), k


def test_kinetics_style_weights_keep_backbone_and_reinit_head(tmp_path, caplog) -> None:
    kinetics = tv_video.mc3_18(weights=None)  # a 400-class file as torchvision ships them
    torch.save(kinetics.state_dict(), tmp_path / "mc3.pt")
    with caplog.at_level("INFO", logger="fvc.models"):
        model = build_model({"name": "mc3_18", "weights": str(tmp_path / "mc3.pt")})
    assert torch.equal(model.stem[0].weight, kinetics.stem[0].weight)
    assert model.fc[1].weight.shape == (2, 512)
    assert "classifier head re-initialised (fc.1.weight, fc.1.bias)" in caplog.text


def test_bad_weights_are_clear_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"model.weights: file .*nope.pt does not exist"):
        build_model({"name": "small3d", "weights": str(tmp_path / "nope.pt")})
    torch.save(build_model({"name": "small3d"}).state_dict(), tmp_path / "small.pt")
    with pytest.raises(ValueError, match=r"unexpected tensor|lacks"):
        build_model({"name": "mc3_18", "weights": str(tmp_path / "small.pt")})
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="not a state dict"):
        build_model({"name": "small3d", "weights": str(tmp_path / "list.pt")})
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="cannot load"):
        build_model({"name": "small3d", "weights": str(tmp_path / "junk.pt")})


def test_a_small3d_fold_does_not_import_torchvision() -> None:
    """Importing torchvision costs every train/predict job ~2 s of start-up; a small3d run has
    no use for it (a fresh interpreter: this one imported torchvision above)."""
    code = (
        "import sys, fvc.train, fvc.predict\n"
        "from fvc.train.state import library_versions\n"
        "from fvc.models import build_model\n"
        "from fvc.train.optim import param_groups\n"
        "m = build_model({'name': 'small3d'})\n"
        "param_groups(m, {'lr': 0.1, 'backbone_lr_scale': 0.5})\n"
        "assert library_versions()['torchvision']\n"
        "print(sorted(n for n in sys.modules if n.split('.')[0] == 'torchvision'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
