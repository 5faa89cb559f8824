"""The final model (fvc.refit): its epochs, its training set, its file and its resume."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bench.synthetic import fit_synthetic, write_synthetic_inputs
from fvc.augment import augment_fold
from fvc.datasets import load_fold
from fvc.models import build_model
from fvc.refit import RefitError, fold_best_epochs, refit, refit_epochs
from fvc.train import EXIT_RESUMABLE, FinalOutputs, FoldInputs
from fvc.train import resume as ckpt
from tests.conftest import assert_same_weights

MODEL = {"name": "small3d", "dropout": 0.2}
# cosine over 4 epochs: the final model (2 epochs) must still train with the folds' rates
TRAIN = {
    "epochs": 4,
    "batch_size": 4,
    "checkpoint_every_n_batches": 2,
    "seed": 5,
    "scheduler": "cosine",
}
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    """Synthetic upstream artifacts plus an augment of every video (augment_fold, fold=None)."""
    root = tmp_path_factory.mktemp("in")
    out = write_synthetic_inputs(root, n_videos=24, frames=4, size=16, n_folds=3)
    out["aug_clips"], out["aug_manifest"] = str(root / "aug.npy"), str(root / "aug.parquet")
    augment_fold(
        out["clips"], out["splits"], None, out["aug_clips"], out["aug_manifest"], {"copies": 1}
    )
    return out


def write_metrics(root: Path, best_epochs: list[int]) -> list[Path]:
    paths = []
    for k, e in enumerate(best_epochs):
        p = root / f"fold_{k}" / "metrics.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps({"fold": k, "best_epoch": e, "roc_auc": 0.9}))
        paths.append(p)
    return paths


def final_inputs(inputs: dict) -> FoldInputs:
    """The final model's inputs: every video of splits.parquet and its augmented copies."""
    names = ("clips", "index", "splits", "aug_clips", "aug_manifest")
    return FoldInputs(*(inputs[k] for k in names))


def run_refit(inputs: dict, root: Path, best_epochs=(2, 3, 1), **kw) -> int:
    metrics = write_metrics(root / "folds", list(best_epochs))
    files = FoldInputs(
        *(inputs[k] for k in ("clips", "index", "splits", "aug_clips", "aug_manifest"))
    )
    return refit(
        files,
        metrics,
        FinalOutputs.in_dir(root / "final"),
        root / "final" / "refit.json",
        MODEL,
        {**TRAIN, **kw.pop("train", {})},
        {},
        root / "ck",
        threads=1,
        device="cpu",
        **kw,
    )


def load_final(root: Path) -> dict:
    return torch.load(root / "final" / "model.pt", weights_only=True)


def stopped_refit(inputs: dict, root: Path) -> int:
    """A refit whose time budget (1 min, 30 s margin, started 30 s ago) ends after one step."""
    return run_refit(
        inputs, root, train={"time_margin_s": 30}, runtime_min=1.0, started_at=time.time() - 30
    )


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory) -> Path:
    """One uninterrupted refit (folds' best epochs 2, 3, 1 -> 2 epochs)."""
    root = tmp_path_factory.mktemp("ref")
    assert run_refit(inputs, root) == 0
    return root


@pytest.mark.parametrize(
    ("best", "epochs"),
    [([2, 3, 1], 2), ([5], 5), ([2, 3], 2), ([1, 4, 4, 7], 4), ([1, 2, 9, 9, 9], 9), ([1, 1], 1)],
)
def test_refit_epochs_are_the_median_of_the_folds_best_epochs(tmp_path, best, epochs) -> None:
    # an even number of folds between two epochs rounds down
    assert refit_epochs(fold_best_epochs(write_metrics(tmp_path, best))) == epochs


def test_unusable_fold_metrics_are_one_line_errors_naming_the_file(tmp_path) -> None:
    paths = write_metrics(tmp_path, [2, 3])
    paths[1].unlink()
    name = re.escape(str(paths[1]))
    with pytest.raises(RefitError, match=rf"^{name}: missing; .*every fold trained") as err:
        fold_best_epochs(paths)
    assert "\n" not in str(err.value)
    paths[1].write_text('{"fold": 1}')
    with pytest.raises(RefitError, match=rf"^{name}: no best_epoch"):
        fold_best_epochs(paths)
    paths[1].write_text('{"best_epoch": 0}')
    with pytest.raises(RefitError, match=rf"^{name}: best_epoch 0 is not"):
        fold_best_epochs(paths)
    with pytest.raises(RefitError, match=r"no fold metrics\.json"):
        fold_best_epochs([])


def test_missing_fold_metrics_exit_2_with_one_log_line(inputs, tmp_path, caplog) -> None:
    metrics = write_metrics(tmp_path, [2, 3])
    metrics[0].unlink()
    code = refit(
        final_inputs(inputs),
        metrics,
        FinalOutputs.in_dir(tmp_path / "final"),
        tmp_path / "final" / "refit.json",
        MODEL,
        TRAIN,
        {},
        tmp_path / "ck",
    )
    assert code == 2
    assert f"{metrics[0]}: missing" in caplog.text
    assert not (tmp_path / "final").exists() and not (tmp_path / "ck").exists()


def test_the_training_set_is_every_usable_video_plus_its_augmented_copies(inputs) -> None:
    splits = pd.read_parquet(inputs["splits"])
    manifest = pd.read_parquet(inputs["aug_manifest"])
    # augment_fold(fold=None): one copy of every video of splits.parquet, none other
    assert sorted(manifest["video_id"]) == sorted(splits["video_id"])
    fold_manifest = pd.read_parquet(inputs["folds"][0]["aug_manifest"])
    assert len(manifest) > len(fold_manifest)
    data = load_fold(final_inputs(inputs), fold=None)
    assert len(data.val) == 0 and data.n_aug == len(splits)
    assert len(data.train) == 2 * len(splits)
    main = data.train.sources == 0
    assert sorted(data.train.rows[main]) == sorted(splits["clip_row"])
    assert sorted(data.train.labels[main]) == sorted(splits["label"])
    # the clips the final model reads are the augmented copies written for it
    x, _ = data.train.get_batch(np.flatnonzero(~main)[:3])
    aug = np.load(inputs["aug_clips"])
    assert np.array_equal(x.numpy(), aug[:3])


def test_final_model_is_the_last_epoch_in_best_model_layout(inputs, reference) -> None:
    final = load_final(reference)
    assert {"model_state", "model", "epoch"} <= set(final)
    assert final["epoch"] == 2 and final["model"]["name"] == "small3d"
    model = build_model(final["model"])
    model.load_state_dict(final["model_state"])  # strict: the exact architecture
    # the last epoch's weights (no validation picks another)
    last = ckpt.load_checkpoint(ckpt.epoch_path(reference / "ck", 2))["model_state"]
    assert_same_weights(final["model_state"], last)
    info = json.loads((reference / "final" / "refit.json").read_text())
    assert info["epochs"] == 2 and info["fold_best_epochs"] == [2, 3, 1]
    assert info["n_videos"] == 24 and info["n_augmented"] == 24
    hist = pd.read_csv(reference / "final" / "history.csv")
    assert list(hist["epoch"]) == [1, 2] and hist["train_loss"].notna().all()
    events = [json.loads(x) for x in (reference / "final/memory.jsonl").read_text().splitlines()]
    assert events[-1]["event"] == "fold_end" and events[-1]["epochs"] == 2


def test_the_lr_schedule_spans_train_epochs(inputs, reference, tmp_path) -> None:
    # epoch e of the final model trains at the rate epoch e of a fold trained at
    hist = pd.read_csv(reference / "final" / "history.csv")
    fit_synthetic(inputs, tmp_path, MODEL, TRAIN, device="cpu")
    fold_hist = pd.read_csv(tmp_path / "out" / "history.csv")
    assert len(fold_hist) == 4
    assert list(hist["lr"]) == pytest.approx(list(fold_hist["lr"][:2]))
    assert hist["lr"].iloc[1] < hist["lr"].iloc[0]


def test_time_budget_stop_then_rerun_resumes_to_identical_weights(inputs, reference, tmp_path):
    code = stopped_refit(inputs, tmp_path)
    assert code == EXIT_RESUMABLE
    state = ckpt.load_checkpoint(tmp_path / "ck" / ckpt.LATEST)
    assert (state["epoch"], state["batch_in_epoch"]) == (0, 1)
    assert not (tmp_path / "final" / "model.pt").exists()
    assert run_refit(inputs, tmp_path) == 0
    assert_same_weights(load_final(tmp_path)["model_state"], load_final(reference)["model_state"])


_KILLED_RUN = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    import fvc.train
    from tests.unit import test_refit as t
    step = fvc.train.loop.robust_step
    def slow_step(*args, **kwargs):  # same maths, slow enough to be killed mid-epoch
        time.sleep(0.05)
        return step(*args, **kwargs)
    fvc.train.loop.robust_step = slow_step
    inputs, root = json.loads(sys.argv[1]), Path(sys.argv[2])
    sys.exit(t.run_refit(inputs, root))
    """
)


def test_sigkill_mid_epoch_then_rerun_resumes_to_identical_weights(inputs, reference, tmp_path):
    """A real SIGKILL of a refit process once a mid-epoch checkpoint exists; the rerun resumes
    from it (not from scratch) and ends with the uninterrupted run's weights."""
    latest = tmp_path / "ck" / ckpt.LATEST
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_RUN, json.dumps(inputs), str(tmp_path)], cwd=REPO, env=env
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            try:
                state = ckpt.load_checkpoint(latest)
            except Exception:
                state = None
            if state is not None and (state["epoch"], state["batch_in_epoch"]) >= (0, 4):
                break
            time.sleep(0.02)
        assert proc.poll() is None, "refit finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    killed_at = ckpt.load_checkpoint(latest)
    assert (killed_at["epoch"], killed_at["batch_in_epoch"]) >= (0, 4)
    assert not (tmp_path / "final" / "model.pt").exists()
    assert run_refit(inputs, tmp_path) == 0
    events = [json.loads(x) for x in (tmp_path / "final/memory.jsonl").read_text().splitlines()]
    starts = [e for e in events if e["event"] == "stage_start"]
    assert len(starts) == 2 and starts[1]["resumed"]
    assert (starts[1]["epoch"], starts[1]["batch"]) >= (0, 4)
    assert_same_weights(load_final(tmp_path)["model_state"], load_final(reference)["model_state"])


def test_fewer_epochs_after_a_stop_start_fresh_not_past_the_limit(inputs, tmp_path) -> None:
    # stopped inside epoch 1 of 2; then the folds say 1 epoch: the checkpoint (trained for a
    # 2-epoch refit) is not resumed, the final model is a clean 1-epoch run
    code = stopped_refit(inputs, tmp_path)
    assert code == EXIT_RESUMABLE
    assert run_refit(inputs, tmp_path, best_epochs=(1, 1, 2)) == 0
    events = [json.loads(x) for x in (tmp_path / "final/memory.jsonl").read_text().splitlines()]
    assert [e for e in events if e["event"] == "stage_start"][-1]["resumed"] is False
    assert load_final(tmp_path)["epoch"] == 1
    clean = tmp_path / "clean"
    assert run_refit(inputs, clean, best_epochs=(1, 1, 2)) == 0
    assert_same_weights(load_final(tmp_path)["model_state"], load_final(clean)["model_state"])
