"""The CUDA code paths: autocast + GradScaler, a real CUDA OOM, CUDA RNG, pinned async copies,
background checkpoints of CUDA tensors, device choice. Skipped where no GPU is visible.

Runs on a stock PyTorch GPU image (no PyAV, no Snakemake) from a checkout::

    python -m pytest tests/gpu --confcutdir=tests/gpu -p no:cacheprovider

(``--confcutdir`` keeps pytest from loading tests/conftest.py, which needs PyAV.)
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device: torch.cuda.is_available() is False"
)

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "src"))

import fvc.train  # noqa: E402
from bench.synthetic import fit_synthetic, fold_inputs, write_synthetic_inputs  # noqa: E402
from fvc.config import ConfigError  # noqa: E402
from fvc.datasets import input_norm, load_fold  # noqa: E402
from fvc.devices import pick_device  # noqa: E402
from fvc.memory import MemoryPolicy, memory_stats  # noqa: E402
from fvc.models import build_model  # noqa: E402
from fvc.train import resume as ckpt  # noqa: E402
from fvc.train import state  # noqa: E402
from fvc.train.state import new_run  # noqa: E402
from fvc.train.step import apply_update, forward_backward  # noqa: E402

CUDA = torch.device("cuda", 0)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    return write_synthetic_inputs(tmp_path_factory.mktemp("in"), n_videos=32, frames=8, size=32)


def fit(p: dict, root: Path, train: dict) -> dict:
    base = {"epochs": 2, "batch_size": 8, "checkpoint_every_n_batches": 2, "seed": 1}
    return fit_synthetic(p, root, {"name": "small3d"}, {**base, **train}, device="cuda")


def test_device_choice() -> None:
    assert pick_device("auto").type == "cuda" and pick_device("cuda") == CUDA
    with pytest.raises(ConfigError, match=r"train.device: 'cuda:99' but only \d+ CUDA"):
        pick_device("cuda:99")


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_autocast_and_grad_scaler_on_cuda(inputs, precision: str) -> None:
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    data = load_fold(fold_inputs(inputs), fold=0)
    x, y = data.train.get_batch(np.arange(8))
    model = build_model({"name": "small3d"}).to(CUDA)
    seen: list[torch.dtype] = []
    model.features[0].register_forward_hook(lambda m, a, out: seen.append(out.dtype))
    tc = {
        "lr": 1e-3,
        "weight_decay": 0.0,
        "scheduler": "none",
        "precision": precision,
        "batch_size": 8,
        "class_weights": "none",
        "epochs": 1,
    }
    run = new_run(model, tc, CUDA, data.train.labels, MemoryPolicy(), None, input_norm(CUDA))
    loss = forward_backward(run, x.pin_memory(), y.pin_memory(), 4)
    apply_update(run)
    assert loss.device.type == "cuda" and torch.isfinite(loss)
    assert seen == [{"fp16": torch.float16, "bf16": torch.bfloat16}[precision]] * 2
    assert (run.scaler is not None) == (precision == "fp16")


def test_fp16_oom_in_optimizer_step_stops_then_resumes(inputs, tmp_path, monkeypatch) -> None:
    calls = {"n": 0}
    original = torch.optim.AdamW.step

    def step_then_oom(self, *a, **k):
        out = original(self, *a, **k)
        calls["n"] += 1
        if calls["n"] == 3:
            raise torch.OutOfMemoryError("CUDA out of memory (injected after the update)")
        return out

    with monkeypatch.context() as m:
        m.setattr(torch.optim.AdamW, "step", step_then_oom)
        with pytest.raises(fvc.train.TrainingInterrupted, match="inside the optimizer step"):
            fit(inputs, tmp_path, {"precision": "fp16"})
    # GradScaler may skip the first steps (inf at the initial scale): the fault lands in batch
    # 3 or later; the latest checkpoint is one of the periodic ones before it, never after
    state = ckpt.load_checkpoint(tmp_path / "ck" / ckpt.LATEST)
    assert not state["complete"] and state["batch_in_epoch"] % 2 == 0
    assert state["scaler_state"]["scale"] >= 1
    metrics = fit(inputs, tmp_path, {"precision": "fp16"})
    assert metrics["epochs_trained"] == 2


def test_cuda_rng_and_memory_stats_roundtrip(tmp_path) -> None:
    torch.cuda.manual_seed(5)
    path = tmp_path / "rng.pt"
    ckpt.save_checkpoint(path, {"format": state.FORMAT, "rng": state.capture_rng()})
    first = torch.rand(4, device=CUDA)
    state.restore_rng(ckpt.load_checkpoint(path)["rng"])
    assert torch.equal(first, torch.rand(4, device=CUDA))
    stats = memory_stats(CUDA)
    assert {"cuda_allocated_mb", "cuda_reserved_mb", "cuda_peak_mb"} <= set(stats)


def test_background_checkpoint_of_cuda_tensors_is_a_snapshot(tmp_path) -> None:
    live = torch.zeros(4096, 4096, device=CUDA)
    cp = ckpt.Checkpointer(tmp_path, lambda c: {"format": state.FORMAT, "w": live}, every_s=1)
    assert cp.save_background()
    live.add_(1.0)  # queued after the copy on the same stream
    cp.wait()
    assert float(ckpt.load_checkpoint(tmp_path / ckpt.LATEST)["w"].max()) == 0.0


def test_gpu_check_on_cuda_real_oom_and_kill_resume() -> None:
    """bench/gpu_check.py at a reduced size: a real CUDA OOM and a SIGKILL + resume on CUDA."""
    cmd = [
        sys.executable,
        str(REPO / "bench/gpu_check.py"),
        "--device",
        "cuda",
        "--model",
        "r3d_18",
        "--frames",
        "8",
        "--size",
        "112",
        "--batch",
        "8",
        "--steps",
        "4",
        "--reps",
        "1",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr[-3000:]
    b = re.search(
        r"^\(b\) OOM \(real CUDA OOM.*: (\d+) OOM .*micro-batch 8 -> (\d+).*finished$", out, re.M
    )
    assert b and int(b.group(1)) >= 1 and int(b.group(2)) < 8, out
    assert "resumed at the exact batch" in out and "(e) peak CUDA memory" in out, out
