"""Fold datasets and the training loop: outputs, OOM recovery, resume decisions, time budget."""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import fvc.train
from fvc import checkpoint as ckpt
from fvc.datasets import (
    class_weights,
    epoch_batches,
    load_fold,
    to_model_input,
    write_synthetic_inputs,
)
from fvc.metrics import METRIC_NAMES
from fvc.models import build_model
from fvc.train import FoldInputs, FoldOutputs, TrainingFailed, TrainingInterrupted, fit_fold

BASE = {"epochs": 3, "batch_size": 4, "checkpoint_every_n_batches": 2, "seed": 5}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    return write_synthetic_inputs(tmp_path_factory.mktemp("in"), n_videos=24, frames=4, size=16)


def fold_inputs(inputs: dict, fold: int = 0) -> FoldInputs:
    return FoldInputs(inputs["clips"], inputs["index"], inputs["splits"], **inputs["folds"][fold])


def fit(inputs: dict, root: Path, train: dict | None = None, **kw) -> dict:
    """fit_fold on fold 0 with outputs in root/out and checkpoints in root/ck."""
    model = kw.pop("model", {"name": "small3d", "dropout": 0.2})
    return fit_fold(
        fold_inputs(inputs),
        FoldOutputs.in_dir(root / "out"),
        0,
        model,
        {**BASE, **(train or {})},
        kw.pop("memory", {}),
        root / "ck",
        threads=1,
        **kw,
    )


def final_weights(root: Path) -> dict[str, torch.Tensor]:
    return ckpt.load_checkpoint(root / "ck" / ckpt.LATEST)["model_state"]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory) -> Path:
    """One uninterrupted run of the BASE config."""
    root = tmp_path_factory.mktemp("ref")
    fit(inputs, root)
    return root


# ---------------------------------------------------------------- datasets


def test_fold_sets_come_from_the_declared_artifacts(inputs) -> None:
    data = load_fold(**vars(fold_inputs(inputs, 1)), fold=1)
    splits = pd.read_parquet(inputs["splits"])
    assert len(data.val) == (splits["fold"] == 1).sum() == 12
    assert len(data.train) == 12 + data.n_aug and data.n_aug == 12
    assert data.val_rows["video_id"].tolist() == splits[splits["fold"] == 1]["video_id"].tolist()
    x, _ = data.train.get_batch([0, 12, 23])
    assert x.dtype == torch.uint8 and tuple(x.shape) == (3, 4, 16, 16, 3)
    clips = np.load(inputs["clips"])
    train_rows = splits[splits["fold"] != 1]["clip_row"].to_numpy()
    assert np.array_equal(x[0].numpy(), clips[train_rows[0]])
    assert np.array_equal(x[1].numpy(), clips[train_rows[0]][:, :, ::-1])  # augmented copy


def test_no_augmentation_and_bad_inputs(tmp_path) -> None:
    p = write_synthetic_inputs(tmp_path, n_videos=8, aug_copies=0)
    fi = vars(FoldInputs(p["clips"], p["index"], p["splits"], **p["folds"][0]))
    assert load_fold(**fi, fold=0).n_aug == 0
    with pytest.raises(ValueError, match="no video has fold 5"):
        load_fold(**fi, fold=5)
    splits = pd.read_parquet(p["splits"])
    splits.loc[3, "clip_row"] = 99
    splits.to_parquet(tmp_path / "bad_row.parquet")
    with pytest.raises(
        ValueError, match=r"bad_row.parquet: row 3 \(video_id v00004\) has clip_row 99"
    ):
        load_fold(**{**fi, "splits": tmp_path / "bad_row.parquet"}, fold=0)
    splits = pd.read_parquet(p["splits"]).assign(label=lambda d: d["label"].replace(1, 7))
    splits.to_parquet(tmp_path / "bad_label.parquet")
    with pytest.raises(
        ValueError, match=r"bad_label.parquet: row 1 \(video_id v00002\) has label 7 "
    ):
        load_fold(**{**fi, "splits": tmp_path / "bad_label.parquet"}, fold=0)
    leak = write_synthetic_inputs(tmp_path / "leak", n_videos=8)
    with pytest.raises(ValueError, match="augmented copies of validation video"):
        load_fold(**{**fi, **leak["folds"][1]}, fold=0)  # fold 1's copies = fold 0's val videos


def test_batch_order_is_a_pure_function_of_seed_fold_epoch() -> None:
    labels = np.array([0] * 30 + [1] * 6)
    a = epoch_batches(labels, 8, seed=1, fold=0, epoch=2)
    assert all(
        np.array_equal(x, y) for x, y in zip(a, epoch_batches(labels, 8, 1, 0, 2), strict=True)
    )
    assert not np.array_equal(np.concatenate(a), np.concatenate(epoch_batches(labels, 8, 1, 0, 3)))
    assert sorted(np.concatenate(a)) == list(range(36)) and [len(b) for b in a] == [8, 8, 8, 8, 4]
    drawn = np.concatenate(
        [np.concatenate(epoch_batches(labels, 8, 1, 0, e, "balanced")) for e in range(50)]
    )
    assert abs(labels[drawn].mean() - 0.5) < 0.05  # classes drawn equally often


def test_model_input_and_class_weights() -> None:
    x = torch.full((2, 4, 8, 8, 3), 255, dtype=torch.uint8)
    out = to_model_input(x, "cpu")
    assert out.shape == (2, 3, 4, 8, 8) and out.dtype == torch.float32
    assert torch.allclose(out[0, 0], torch.tensor((1 - 0.43216) / 0.22803))
    assert class_weights(np.array([0, 0, 0, 1]), "auto").tolist() == pytest.approx([2 / 3, 2.0])
    assert class_weights(np.array([0, 1]), "none").tolist() == [1.0, 1.0]


# ---------------------------------------------------------------- the loop


def test_outputs_follow_the_artifact_contract(inputs, reference) -> None:
    out = reference / "out"
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"fold", "best_epoch", "epochs_trained", "n_train", "n_val", "val_loss"} <= set(metrics)
    assert set(METRIC_NAMES) | {"tn", "fp", "fn", "tp"} <= set(metrics)
    assert (metrics["fold"], metrics["epochs_trained"], metrics["n_train"]) == (0, 3, 12)
    assert metrics["roc_auc"] >= 0.9  # the synthetic signal is learnable
    pred = pd.read_parquet(out / "predictions.parquet")
    assert list(pred.columns) == ["video_id", "path", "label", "prob_fake", "pred", "fold"]
    assert len(pred) == metrics["n_val"] and pred["prob_fake"].between(0, 1).all()
    hist = pd.read_csv(out / "history.csv")
    assert list(hist.columns) == fvc.train.HISTORY_COLUMNS and hist["epoch"].tolist() == [1, 2, 3]
    best = torch.load(out / "best_model.pt", weights_only=True)
    assert set(best) == {"model_state", "model", "epoch", "metric", "value"}
    assert best["epoch"] == metrics["best_epoch"] and best["metric"] == "roc_auc"
    model = build_model(best["model"])
    model.load_state_dict(best["model_state"])
    events = [json.loads(x)["event"] for x in (out / "memory.jsonl").read_text().splitlines()]
    assert events == ["stage_start", "epoch_end", "epoch_end", "epoch_end", "fold_end"]
    state = ckpt.load_checkpoint(reference / "ck" / ckpt.LATEST)
    assert state["complete"] and state["epoch"] == 3
    assert [e for e, _ in ckpt.epoch_checkpoints(reference / "ck")] == [3, 2]  # keep 2


def test_micro_batches_accumulate_the_full_batch_gradient(inputs) -> None:
    data = load_fold(**vars(fold_inputs(inputs)), fold=0)
    x, y = data.train.get_batch(np.arange(8))
    grads = []
    for micro in (8, 3):
        torch.manual_seed(0)
        model = build_model({"name": "small3d", "dropout": 0.0}).eval()  # BN on running stats
        opt = torch.optim.SGD(model.parameters(), lr=0.0)
        run = fvc.train.Run(model, opt, None, None, torch.device("cpu"), False,
                            torch.tensor([0.7, 1.9]), None, None, None)  # fmt: skip
        loss = fvc.train.train_step(run, x, y, micro)
        grads.append((loss, [p.grad.clone() for p in model.parameters()]))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-5)
    for a, b in zip(grads[0][1], grads[1][1], strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)


def test_cpu_amp_skips_steps_with_non_finite_gradients(inputs, tmp_path) -> None:
    data = load_fold(**vars(fold_inputs(inputs)), fold=0)
    x, y = data.train.get_batch(np.arange(4))
    torch.manual_seed(0)
    model = build_model({"name": "small3d"})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.head.weight.register_hook(lambda g: g * float("inf"))  # what the oneDNN glitch does
    opt = torch.optim.AdamW(model.parameters())
    mlog = fvc.train.MemoryLog(tmp_path / "m.jsonl")
    run = fvc.train.Run(model, opt, None, None, torch.device("cpu"), True, torch.ones(2), None,
                        mlog, None)  # fmt: skip
    assert np.isfinite(fvc.train.train_step(run, x, y, 4))
    assert [e["event"] for e in mlog.read()] == ["nonfinite_grad"]
    for k, v in model.state_dict().items():
        if "running" not in k and "num_batches" not in k:
            assert torch.equal(v, before[k]), k


def oom_model(limit: int, training: bool = True):
    """build_model whose forward raises a CUDA-style OOM above ``limit`` clips per batch."""

    def build(cfg: dict):
        model = build_model(cfg)

        def hook(module, args):
            if args[0].shape[0] > limit and module.training == training:
                raise torch.OutOfMemoryError(
                    f"CUDA out of memory. Tried to allocate {args[0].shape[0]} GiB (injected)"
                )

        model.register_forward_pre_hook(hook)
        return model

    return build


def test_injected_oom_shrinks_micro_batch_like_a_reduced_start(inputs, tmp_path, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(fvc.train, "build_model", oom_model(limit=2))
        fit(inputs, tmp_path / "oom")
    fit(inputs, tmp_path / "small", micro_batch_size=2)
    assert_same_weights(final_weights(tmp_path / "oom"), final_weights(tmp_path / "small"))
    hist = pd.read_csv(tmp_path / "oom" / "out" / "history.csv")
    assert hist["micro_batch_size"].tolist() == [2, 2, 2]
    events = [json.loads(x) for x in (tmp_path / "oom/out/memory.jsonl").read_text().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds.count("oom") == 2 and kinds.count("retry") == 1  # only the first batch fails
    change = next(e for e in events if e["event"] == "batch_size")
    assert (change["old"], change["micro_batch_size"], change["batch"]) == (4, 2, 1)


def test_evaluation_halves_its_batch_on_oom(inputs, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(fvc.train, "build_model", oom_model(limit=1, training=False))
    metrics = fit(inputs, tmp_path, {"epochs": 1})
    assert metrics["n_val"] == 12
    events = [json.loads(x) for x in (tmp_path / "out/memory.jsonl").read_text().splitlines()]
    assert [e["eval_batch_size"] for e in events if e["event"] == "eval_oom"] == [2, 1]


def test_fold_fails_when_too_many_batches_are_skipped(inputs, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(fvc.train, "build_model", oom_model(limit=0))
    with pytest.raises(TrainingFailed, match=r"6 of 6 batches skipped .*max_skip_fraction 0.1"):
        fit(inputs, tmp_path, memory={"max_oom_retries": 0, "min_batch_size": 2})
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_time_budget_checkpoints_and_resume_is_exact(inputs, reference, tmp_path) -> None:
    with pytest.raises(TrainingInterrupted, match="time budget"):
        # budget already used up: one step, checkpoint, stop
        fit(inputs, tmp_path, {"time_margin_s": 30}, runtime_min=1.0, started_at=time.time() - 30)
    state = ckpt.load_checkpoint(tmp_path / "ck" / ckpt.LATEST)
    assert (state["epoch"], state["batch_in_epoch"]) == (0, 1)
    assert not (tmp_path / "out" / "metrics.json").exists()
    fit(inputs, tmp_path)
    assert_same_weights(final_weights(tmp_path), final_weights(reference))
    events = [json.loads(x) for x in (tmp_path / "out/memory.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events][:3] == ["stage_start", "interrupted", "stage_start"]
    assert events[2]["resumed"] and events[2]["batch"] == 1


def test_corrupt_latest_falls_back_to_the_newest_good_epoch(inputs, reference, tmp_path, caplog):
    fit(inputs, tmp_path, {"keep_epoch_checkpoints": 3})
    ck = tmp_path / "ck"
    ckpt.epoch_path(ck, 3).unlink()  # as if killed while writing epoch 3's checkpoints
    (ck / ckpt.LATEST).write_bytes((ck / ckpt.LATEST).read_bytes()[:5000])
    with caplog.at_level(logging.INFO):
        fit(inputs, tmp_path)
    assert "unreadable checkpoint" in caplog.text and "end of epoch 2" in caplog.text
    assert_same_weights(final_weights(tmp_path), final_weights(reference))
    assert torch.equal(
        torch.load(tmp_path / "out/best_model.pt", weights_only=True)["model_state"]["head.weight"],
        torch.load(reference / "out/best_model.pt", weights_only=True)["model_state"][
            "head.weight"
        ],
    )


def test_changed_config_and_forced_rerun_start_fresh(inputs, reference, tmp_path, caplog) -> None:
    shutil.copytree(reference / "ck", tmp_path / "ck")  # a finished fold
    with caplog.at_level(logging.INFO):
        fit(inputs, tmp_path)  # forced rerun: retrains from scratch, same result
    assert "completed; fresh start" in caplog.text
    events = [json.loads(x) for x in (tmp_path / "out/memory.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events].count("stage_start") == 1 and not events[0]["resumed"]
    assert_same_weights(final_weights(tmp_path), final_weights(reference))

    ckpt.save_checkpoint(  # an unfinished state of the old config...
        tmp_path / "ck" / ckpt.LATEST,
        {**ckpt.load_checkpoint(tmp_path / "ck" / ckpt.LATEST), "complete": False, "epoch": 1},
    )
    caplog.clear()
    with caplog.at_level(logging.INFO):
        fit(inputs, tmp_path, {"lr": 0.001, "epochs": 1})  # ...is not resumed with a new one
    assert "config or inputs changed" in caplog.text
    (old,) = tmp_path.glob("ck.old-*")
    assert ckpt.load_checkpoint(old / ckpt.LATEST)["epoch"] == 1
    assert pd.read_csv(tmp_path / "out/history.csv")["lr"].tolist() == [0.001]


@pytest.mark.parametrize(
    "train",
    [
        {"use_amp": True, "epochs": 1},  # bf16 autocast on CPU
        {"scheduler": "step", "class_weights": "auto", "sampler": "balanced", "epochs": 2},
        {"scheduler": "none", "patience": 1, "best_metric": "val_loss", "lr": 0.0},
    ],
    ids=["amp", "step-balanced", "early-stop"],
)
def test_training_options(inputs, tmp_path, train: dict) -> None:
    metrics = fit(inputs, tmp_path, train)
    hist = pd.read_csv(tmp_path / "out" / "history.csv")
    assert np.isfinite(hist["train_loss"]).all() and np.isfinite(metrics["val_loss"])
    if train.get("patience"):  # lr 0: nothing improves after epoch 1
        assert metrics["epochs_trained"] == 2 and metrics["best_epoch"] == 1
    if train.get("scheduler") == "step":
        assert hist["lr"].tolist() == pytest.approx([0.003, 0.0003])


def test_loader_workers_do_not_change_the_result(inputs, tmp_path) -> None:
    fit(inputs, tmp_path / "w0", {"epochs": 1})
    fit(inputs, tmp_path / "w1", {"epochs": 1, "num_workers": 1})
    assert_same_weights(final_weights(tmp_path / "w0"), final_weights(tmp_path / "w1"))


def test_bad_config_and_cli_help(inputs, tmp_path, capsys) -> None:
    with pytest.raises(ValueError, match=r"train: unknown key.*epoch_count"):
        fit(inputs, tmp_path, {"epoch_count": 3})
    with pytest.raises(ValueError, match=r"train.best_metric: 'auc' is not one of"):
        fit(inputs, tmp_path, {"best_metric": "auc"})
    with pytest.raises(SystemExit) as exc:
        fvc.train.main(["--help"])
    assert exc.value.code == 0 and "--checkpoint-dir" in capsys.readouterr().out
