"""Fold datasets and the training loop: outputs, OOM recovery, resume decisions, time budget."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import fvc
import fvc.cli
import fvc.train
import fvc.train.loop
from bench.synthetic import fit_synthetic, fold_inputs, write_synthetic_inputs
from fvc.config import SCHEMA_PATH, ModelConfig, TrainConfig
from fvc.datasets import (
    class_weights,
    epoch_batches,
    input_norm,
    load_fold,
    to_model_input,
)
from fvc.memory import MemoryLog, MemoryPolicy
from fvc.metrics import METRIC_NAMES
from fvc.models import build_model
from fvc.train import (
    FoldInputs,
    FoldOutputs,
    FoldTarget,
    TrainingFailed,
    TrainingInterrupted,
)
from fvc.train import resume as ckpt
from fvc.train.publish import HISTORY_COLUMNS
from fvc.train.state import Position, Run
from fvc.train.step import apply_update, forward_backward
from tests.conftest import assert_same_weights


def train_step(run, x, y, micro):
    """One optimizer step without the OOM handling of ``robust_step``."""
    loss = forward_backward(run, x, y, micro)
    apply_update(run)
    return loss


BASE = {"epochs": 3, "batch_size": 4, "checkpoint_every_n_batches": 2, "seed": 5}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    return write_synthetic_inputs(tmp_path_factory.mktemp("in"), n_videos=24, frames=4, size=16)


def fit(inputs: dict, root: Path, train: dict | None = None, **kw) -> dict:
    """fit_fold on fold 0 on the CPU, outputs in root/out and checkpoints in root/ck.

    The device is explicit so the bit-identity assertions also hold on a machine with a GPU.
    """
    model = kw.pop("model", {"name": "small3d", "dropout": 0.2})
    return fit_synthetic(
        inputs,
        root,
        model,
        {**BASE, **(train or {})},
        kw.pop("memory", {}),
        device=kw.pop("device", "cpu"),
        **kw,
    )


def cpu_run(model, precision: str = "off", weights=(1.0, 1.0), memlog=None, lr: float = 1e-3):
    """A :class:`Run` on the CPU around ``model`` (AdamW; a GradScaler with fp16)."""
    cpu = torch.device("cpu")
    return Run(
        model,
        torch.optim.AdamW(model.parameters(), lr=lr),
        None,
        torch.amp.GradScaler("cpu") if precision == "fp16" else None,
        cpu,
        precision,
        torch.tensor(weights),
        input_norm(cpu),
        MemoryPolicy(),
        memlog,
        Position(4, 4),
    )


def final_weights(root: Path) -> dict[str, torch.Tensor]:
    return ckpt.load_checkpoint(root / "ck" / ckpt.LATEST)["model_state"]


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory) -> Path:
    """One uninterrupted run of the BASE config."""
    root = tmp_path_factory.mktemp("ref")
    fit(inputs, root)
    return root


# ---------------------------------------------------------------- datasets


def test_fold_sets_come_from_the_declared_artifacts(inputs) -> None:
    data = load_fold(fold_inputs(inputs, 1), fold=1)
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
    fi = vars(fold_inputs(p))
    assert load_fold(FoldInputs(**fi), fold=0).n_aug == 0
    with pytest.raises(ValueError, match="no video has fold 5"):
        load_fold(FoldInputs(**fi), fold=5)
    splits = pd.read_parquet(p["splits"])
    splits.loc[3, "clip_row"] = 99
    splits.to_parquet(tmp_path / "bad_row.parquet")
    with pytest.raises(
        ValueError, match=r"bad_row.parquet: row 3 \(video_id v00004\) has clip_row 99"
    ):
        load_fold(FoldInputs(**{**fi, "splits": tmp_path / "bad_row.parquet"}), fold=0)
    splits = pd.read_parquet(p["splits"]).assign(label=lambda d: d["label"].replace(1, 7))
    splits.to_parquet(tmp_path / "bad_label.parquet")
    with pytest.raises(
        ValueError, match=r"bad_label.parquet: row 1 \(video_id v00002\) has label 7 "
    ):
        load_fold(FoldInputs(**{**fi, "splits": tmp_path / "bad_label.parquet"}), fold=0)
    leak = write_synthetic_inputs(tmp_path / "leak", n_videos=8)
    with pytest.raises(ValueError, match="augmented copies of validation video"):
        load_fold(
            FoldInputs(**{**fi, **leak["folds"][1]}), fold=0
        )  # fold 1's copies = fold 0's val videos


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
    out = to_model_input(x, input_norm("cpu"))
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
    assert list(hist.columns) == list(HISTORY_COLUMNS) and hist["epoch"].tolist() == [
        1,
        2,
        3,
    ]
    best = torch.load(out / "best_model.pt", weights_only=True)
    assert set(best) == {"model_state", "model", "epoch", "metric", "value"}
    assert best["epoch"] == metrics["best_epoch"] and best["metric"] == "roc_auc"
    model = build_model(best["model"])
    model.load_state_dict(best["model_state"])
    events = [json.loads(x)["event"] for x in (out / "memory.jsonl").read_text().splitlines()]
    assert events == ["stage_start", "epoch_end", "epoch_end", "epoch_end", "fold_end"]
    state = ckpt.load_checkpoint(reference / "ck" / ckpt.LATEST)
    assert state["complete"] and state["epoch"] == 3
    best_epoch = metrics["best_epoch"]  # keep 2, plus the best epoch's (the best weights)
    kept = [e for e, _ in ckpt.epoch_checkpoints(reference / "ck")]
    assert kept == sorted({3, 2, best_epoch}, reverse=True)
    stored = ckpt.load_checkpoint(ckpt.epoch_path(reference / "ck", best_epoch))["model_state"]
    assert_same_weights(best["model_state"], stored)
    assert not (reference / "ck" / "best_checkpoint.pt").exists()  # stored once


def test_micro_batches_accumulate_the_full_batch_gradient(inputs) -> None:
    data = load_fold(fold_inputs(inputs), fold=0)
    x, y = data.train.get_batch(np.arange(8))
    grads = []
    for micro in (8, 3):
        torch.manual_seed(0)
        model = build_model({"name": "small3d", "dropout": 0.0}).eval()  # BN on running stats
        run = cpu_run(model, weights=(0.7, 1.9), lr=0.0)
        loss = float(train_step(run, x, y, micro))
        grads.append((loss, [p.grad.clone() for p in model.parameters()]))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-5)
    for a, b in zip(grads[0][1], grads[1][1], strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)


def test_cpu_amp_skips_steps_with_non_finite_gradients(inputs, tmp_path) -> None:
    data = load_fold(fold_inputs(inputs), fold=0)
    x, y = data.train.get_batch(np.arange(4))
    torch.manual_seed(0)
    model = build_model({"name": "small3d"})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.head.weight.register_hook(lambda g: g * float("inf"))  # what the oneDNN glitch does
    run = cpu_run(model, "bf16", memlog=MemoryLog(tmp_path / "m.jsonl"))
    mlog = run.memlog
    assert np.isfinite(float(train_step(run, x, y, 4)))
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
        m.setattr(fvc.train.loop, "build_model", oom_model(limit=2))
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
    monkeypatch.setattr(fvc.train.loop, "build_model", oom_model(limit=1, training=False))
    metrics = fit(inputs, tmp_path, {"epochs": 1})
    assert metrics["n_val"] == 12
    events = [json.loads(x) for x in (tmp_path / "out/memory.jsonl").read_text().splitlines()]
    sizes = [e["eval_batch_size"] for e in events if e["event"] == "eval_batch_size"]
    assert sizes == [2, 1]


def test_evaluation_follows_the_memory_policy_and_never_skips(inputs, tmp_path, monkeypatch):
    """Evaluation shares the step's OOM policy: it stops halving at memory.min_batch_size, and
    since a skipped validation batch would drop videos, an OOM there fails the fold."""
    monkeypatch.setattr(fvc.train.loop, "build_model", oom_model(limit=1, training=False))
    with pytest.raises(MemoryError, match=r"minimum batch 2 \(memory.min_batch_size\)"):
        fit(inputs, tmp_path, {"epochs": 1}, memory={"min_batch_size": 2, "max_oom_retries": 0})
    assert not (tmp_path / "out" / "metrics.json").exists()
    events = [json.loads(x) for x in (tmp_path / "ck/memory.jsonl").read_text().splitlines()]
    sizes = [e["eval_batch_size"] for e in events if e["event"] == "eval_batch_size"]
    assert sizes == [2] and not [e for e in events if e["event"] in ("skip", "eval_skip")]


def test_fold_fails_when_too_many_batches_are_skipped(inputs, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(fvc.train.loop, "build_model", oom_model(limit=0))
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


@pytest.mark.parametrize("damage", ["missing key", "wrong shape"])
def test_checkpoint_that_loads_but_does_not_fit_falls_back(
    inputs, reference, tmp_path, caplog, damage: str
) -> None:
    fit(inputs, tmp_path, {"keep_epoch_checkpoints": 3})
    ck = tmp_path / "ck"
    ckpt.epoch_path(ck, 3).unlink()  # as if killed while writing epoch 3's checkpoints
    state = {**ckpt.load_checkpoint(ck / ckpt.LATEST), "complete": False}  # same fingerprint
    if damage == "missing key":
        del state["optimizer_state"]
    else:
        state["model_state"]["head.weight"] = torch.zeros(3, 64)
    ckpt.save_checkpoint(ck / ckpt.LATEST, state)
    with caplog.at_level(logging.INFO):
        fit(inputs, tmp_path)
    want = "missing key(s) optimizer_state" if damage == "missing key" else "head.weight has shape"
    assert f"unusable checkpoint ({want}" in caplog.text.replace("'", "")
    assert "end of epoch 2" in caplog.text
    assert_same_weights(final_weights(tmp_path), final_weights(reference))


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
        {"precision": "bf16", "epochs": 1},  # bf16 autocast on CPU
        {"precision": "fp16", "epochs": 1},  # fp16 autocast + GradScaler on CPU
        {"scheduler": "step", "class_weights": "auto", "sampler": "balanced", "epochs": 2},
        {"scheduler": "none", "patience": 1, "best_metric": "val_loss", "lr": 0.0},
    ],
    ids=["bf16", "fp16", "step-balanced", "early-stop"],
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


def test_defaults_come_from_the_config_schema() -> None:
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    props = schema["properties"]
    model, train = ModelConfig.of(None).as_dict(), TrainConfig.of(None).as_dict()
    defaults = {k: p["default"] for k, p in props["train"]["properties"].items() if "default" in p}
    assert train == defaults
    assert model == {k: p["default"] for k, p in props["model"]["properties"].items()}
    memory = {k: p["default"] for k, p in props["memory"]["properties"].items()}
    assert dataclasses.asdict(MemoryPolicy()) == memory
    with pytest.raises(ValueError, match=r"train.seed: -1 must be >= 0"):
        TrainConfig.of({"seed": -1})


def test_bad_config_and_cli_help(inputs, tmp_path, capsys) -> None:
    with pytest.raises(ValueError, match=r"train: unknown key.*epoch_count"):
        fit(inputs, tmp_path, {"epoch_count": 3})
    with pytest.raises(ValueError, match=r"train.best_metric: 'auc' is not one of"):
        fit(inputs, tmp_path, {"best_metric": "auc"})
    with pytest.raises(SystemExit) as exc:
        fvc.cli.main(["train", "--help"])  # the `fvc` console script (pyproject.toml)
    assert exc.value.code == 0 and "--checkpoint-dir" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        fvc.cli.main(["--help"])
    assert exc.value.code == 0 and "train" in capsys.readouterr().out


# ---------------------------------------------------------------- precision, devices, config


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_autocast_runs_the_model_in_the_configured_precision(inputs, precision: str) -> None:
    """Fails if autocast were disabled: the convolutions would then compute in float32."""
    data = load_fold(fold_inputs(inputs), fold=0)
    x, y = data.train.get_batch(np.arange(4))
    torch.manual_seed(0)
    model = build_model({"name": "small3d"})
    seen: list[torch.dtype] = []
    for m in model.modules():
        if isinstance(m, torch.nn.Conv3d | torch.nn.Linear):
            m.register_forward_hook(lambda mod, args, out: seen.append(out.dtype))
    run = cpu_run(model, precision)
    train_step(run, x, y, 4)
    fvc.train.evaluate(model, data.val, run.norm, 4, precision)
    want = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    assert seen and set(seen) == {want}
    if precision == "fp16":  # the GradScaler scaled the loss and took part in the step
        assert run.scaler.get_scale() > 1 and run.scaler._get_growth_tracker() in (0, 1)


FP16 = {"precision": "fp16"}


@pytest.fixture(scope="module")
def fp16_reference(inputs, tmp_path_factory) -> Path:
    """One uninterrupted fp16 + GradScaler run of the BASE config on the CPU."""
    root = tmp_path_factory.mktemp("ref16")
    fit(inputs, root, FP16)
    return root


def fail_once(step: int):
    """A callable that raises a CUDA-style OOM the ``step``-th time it is called."""
    calls = {"n": 0}

    def maybe_fail(*_args) -> None:
        calls["n"] += 1
        if calls["n"] == step:
            raise torch.OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 2.00 GiB (injected)"
            )

    return maybe_fail


def test_fp16_oom_after_batchnorm_and_dropout_ran_is_rolled_back_exactly(
    inputs, fp16_reference, tmp_path, monkeypatch
) -> None:
    """(a) OOM at the classifier head: every BatchNorm layer has updated its running statistics
    and dropout has drawn from the RNG; the retry must see the state of before the attempt."""
    fail = fail_once(9)  # epoch 2, batch 3

    def build(cfg: dict):
        model = build_model(cfg)
        model.head.register_forward_pre_hook(lambda m, a: fail() if m.training else None)
        return model

    monkeypatch.setattr(fvc.train.loop, "build_model", build)
    fit(inputs, tmp_path, FP16)
    events = [json.loads(x) for x in (tmp_path / "out/memory.jsonl").read_text().splitlines()]
    assert [
        (e["event"], e.get("epoch"), e.get("batch")) for e in events if "oom" in e["event"]
    ] == [("oom", 2, 3)]
    assert_same_weights(final_weights(tmp_path), final_weights(fp16_reference))
    best = torch.load(tmp_path / "out/best_model.pt", weights_only=True)["model_state"]
    ref = torch.load(fp16_reference / "out/best_model.pt", weights_only=True)["model_state"]
    assert_same_weights(best, ref)


@pytest.mark.parametrize("where", ["optimizer.step", "scaler.unscale_", "scaler.update"])
def test_fp16_oom_inside_the_update_stops_and_resumes_exactly(
    inputs, fp16_reference, tmp_path, monkeypatch, where: str
) -> None:
    """(b), (c) OOM after the update changed state in place: never retried, never saved; the
    rerun resumes from the last checkpoint and ends bit-identical to the run without the fault."""
    fail = fail_once(9)  # epoch 2, batch 3; a background checkpoint was due after batch 2
    owner, name = {
        "optimizer.step": (torch.optim.AdamW, "step"),
        "scaler.unscale_": (torch.amp.GradScaler, "unscale_"),
        "scaler.update": (torch.amp.GradScaler, "update"),
    }[where]
    original = getattr(owner, name)

    def done_then_fail(self, *args, **kwargs):
        out = original(self, *args, **kwargs)  # the state has changed in place...
        fail()  # ...then the allocation of a temporary fails
        return out

    with monkeypatch.context() as m:
        m.setattr(owner, name, done_then_fail)
        with pytest.raises(TrainingInterrupted, match="out of memory inside the optimizer step"):
            fit(inputs, tmp_path, FP16)
    latest = ckpt.load_checkpoint(tmp_path / "ck" / ckpt.LATEST)
    assert (latest["epoch"], latest["batch_in_epoch"]) == (1, 2)  # the state before the fault
    events = [json.loads(x) for x in (tmp_path / "ck/memory.jsonl").read_text().splitlines()]
    lost = [e for e in events if e["event"] == "step_state_lost"]
    assert [(e["epoch"], e["batch"]) for e in lost] == [(2, 3)] and "retry" not in str(events)

    fit(inputs, tmp_path, FP16)  # the rerun
    assert_same_weights(final_weights(tmp_path), final_weights(fp16_reference))


def test_use_amp_still_works_and_names_train_precision(inputs, tmp_path, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        fit(inputs, tmp_path, {"use_amp": True, "epochs": 1})
    assert "train.use_amp is deprecated: set train.precision" in caplog.text
    assert "read as precision: auto" in caplog.text
    assert (
        json.loads((tmp_path / "out/memory.jsonl").read_text().splitlines()[0])["precision"]
        == "bf16"
    )  # auto on the CPU
    with pytest.raises(ValueError, match=r"train.precision: 'fp32' is not one of"):
        fit(inputs, tmp_path / "x", {"precision": "fp32"})
    with pytest.raises(ValueError, match=r"train.device: 'gpu' does not match"):
        fit(inputs, tmp_path / "x", {"device": "gpu"}, device=None)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error where CUDA is missing")
def test_cuda_without_a_gpu_is_a_one_line_error(inputs, tmp_path, caplog) -> None:
    with pytest.raises(ValueError, match=r"^train.device: 'cuda:1' asked for, but no CUDA dev"):
        fit(inputs, tmp_path, {"device": "cuda:1"}, device=None)
    target = FoldTarget(0, FoldOutputs.in_dir(tmp_path / "out"))
    args = (target, fold_inputs(inputs), None, {**BASE, "device": "cuda"}, None, tmp_path / "ck")
    with caplog.at_level(logging.ERROR):
        assert fvc.train.run_fold(*args) == 2
    (line,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert line.startswith("train.device: 'cuda' asked for") and "\n" not in line


@pytest.mark.parametrize("when", ["before", "after"])
def test_oom_in_the_optimizers_first_update_is_retried_and_leaves_no_trace(
    inputs, reference, tmp_path, monkeypatch, when: str
) -> None:
    """AdamW allocates its moments in its first update, before any checkpoint exists: an OOM
    there (before anything changed, or after the weights were updated in place) is undone and
    retried like a forward/backward OOM, never a stop whose rerun would only repeat it."""
    original = torch.optim.AdamW.step
    calls = {"n": 0}

    def fail_first(self, *args, **kwargs):
        calls["n"] += 1
        out = original(self, *args, **kwargs) if when == "after" else None
        if calls["n"] == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB (injected)")
        return out if when == "after" else original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", fail_first)
    fit(inputs, tmp_path)
    events = [json.loads(x) for x in (tmp_path / "out/memory.jsonl").read_text().splitlines()]
    ooms = [
        (e["event"], e.get("epoch"), e.get("batch")) for e in events if e["event"] != "stage_start"
    ]
    assert ooms[:2] == [("oom", 1, 1), ("retry", 1, 1)], ooms
    assert "step_state_lost" not in {e["event"] for e in events}
    assert_same_weights(final_weights(tmp_path), final_weights(reference))


def test_an_oom_taking_a_checkpoint_snapshot_never_ends_the_fold(
    inputs, reference, tmp_path, monkeypatch
) -> None:
    real = ckpt.snapshot
    calls = {"n": 0}

    def oom_twice(obj):
        calls["n"] += 1
        if calls["n"] in (1, 2):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB (injected)")
        return real(obj)

    monkeypatch.setattr(ckpt, "snapshot", oom_twice)
    fit(inputs, tmp_path)  # returns: exit 0 for the job, not 1
    events = [json.loads(x) for x in (tmp_path / "out/memory.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events].count("checkpoint_oom") == 2
    assert calls["n"] > 2  # later background checkpoints were taken
    assert_same_weights(final_weights(tmp_path), final_weights(reference))


def test_a_retry_after_the_fold_completed_publishes_again_without_training(
    inputs, tmp_path, caplog
) -> None:
    """A job reported failed after its training finished (a status or file-system glitch):
    Snakemake deletes its outputs and retries it. The retry (attempt 2) publishes the same
    outputs from the complete checkpoint; a forced rerun (attempt 1) trains afresh."""
    first = fit(inputs, tmp_path, {"epochs": 2})
    out = tmp_path / "out"
    skip = ("memory.jsonl", "best_model.pt")  # new events; torch.save's zip: compared loaded
    published = {p.name: p.read_bytes() for p in out.iterdir() if p.name not in skip}
    model = torch.load(out / "best_model.pt", weights_only=True)
    for p in out.iterdir():
        p.unlink()
    with caplog.at_level(logging.INFO):
        again = fit(inputs, tmp_path, {"epochs": 2}, attempt=2)
    assert "is complete: publishing its outputs again" in caplog.text
    assert again == first
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name not in skip} == published
    again_model = torch.load(out / "best_model.pt", weights_only=True)
    assert_same_weights(again_model.pop("model_state"), model.pop("model_state"))
    assert again_model == model
    events = [json.loads(x) for x in (out / "memory.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events].count("epoch_end") == 2  # the first attempt's only
    caplog.clear()
    with caplog.at_level(logging.INFO):
        fit(inputs, tmp_path, {"epochs": 2})  # attempt 1: a forced rerun trains again
    assert "previous run of this fold completed; fresh start" in caplog.text
