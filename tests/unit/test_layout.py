"""fvc.layout: every artifact path of plain, sweep, repeated and nested runs, on its own.

The expected paths are written out literally: they are the interface users, docs and other
tools rely on (docs/artifacts.md), so a change here must be a deliberate one.
"""

from __future__ import annotations

import re

import pytest

from fvc.config import defaults
from fvc.layout import Layout
from fvc.sweep import merge, variant_configs


def base_config(**cv) -> dict:
    """A complete config (every section from the schema's defaults)."""
    cfg = {s: defaults(s) for s in ("data", "cv", "augment", "model", "train", "memory")}
    cfg["data"]["demo"] = defaults("data.demo")
    cfg["cv"] = {**cfg["cv"], "n_splits": 2, **cv}
    return {"experiment": "x", **cfg}


def layout(sweep: dict | None = None, **cv) -> Layout:
    cfg = {**base_config(**cv), "sweep": sweep or {}}
    return Layout.from_variants("x", variant_configs(cfg), cfg["cv"], sweep_on=bool(sweep))


def test_plain_run_keeps_every_path_under_the_experiment() -> None:
    lay = layout()
    assert lay.variants == ["base"] and not lay.nested and lay.outer_folds == []
    assert lay.fill(lay.path("load", "data/metadata.parquet"), "base") == (
        "runs/x/data/metadata.parquet"
    )
    assert lay.split_files("base") == ["runs/x/splits.parquet"]
    assert lay.fold_outputs("base", "metrics.json") == [
        "runs/x/fold_0/metrics.json",
        "runs/x/fold_1/metrics.json",
    ]
    assert lay.fill(lay.fold_path("augment", "augment/clips.npy"), "base", fold=1) == (
        "runs/x/fold_1/augment/clips.npy"
    )
    assert lay.fill(lay.fold_file("variant", "checkpoints"), "base", fold=0) == (
        "runs/x/checkpoints/fold_0"
    )
    assert lay.fill(lay.fold_file("variant", "logs/train", ".log"), "base", fold=0) == (
        "runs/x/logs/train/fold_0.log"
    )
    assert lay.variant_path("base", "kfold_results.feather") == "runs/x/kfold_results.feather"
    assert lay.train_output("metrics.json") == "runs/x/fold_{fold}/metrics.json"
    assert lay.cache_dir("decode", "decode") == "runs/x/cache/decode"
    assert lay.cache_dir("predict/{name}") == "runs/x/cache/predict/{name}"
    assert lay.final_path("model.pt") == "runs/x/final/model.pt"
    assert lay.predict_path("a.parquet") == "runs/x/predict/a.parquet"


def test_repeats_add_a_level_to_folds_and_splits_only() -> None:
    lay = layout(n_repeats=2)
    assert lay.fold_ids() == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert lay.split_files("base") == [
        "runs/x/repeat_0/splits.parquet",
        "runs/x/repeat_1/splits.parquet",
    ]
    assert lay.fold_outputs("base", "metrics.json")[2] == "runs/x/repeat_1/fold_0/metrics.json"
    assert lay.fill(lay.fold_file("variant", "checkpoints"), "base", repeat=1, fold=0) == (
        "runs/x/checkpoints/repeat_1/fold_0"
    )
    assert lay.variant_path("base", "summary.json") == "runs/x/summary.json"


def test_sweep_shares_stages_by_key_and_reuses_identical_variants() -> None:
    sweep = {
        "lr": {"train": {"lr": 0.01}},
        "frames": {"data": {"num_frames": 4}},
        "same": {},
        "ops": {"train": {"num_workers": 2}},  # operational only: the base's folds
    }
    lay = layout(sweep)
    assert lay.variants == ["base", "lr", "frames", "same", "ops"]
    keys = lay.keys
    assert keys["lr"]["decode"] == keys["base"]["decode"] != keys["frames"]["decode"]
    assert keys["frames"]["load"] == keys["base"]["load"]
    assert lay.trained_by == {
        "base": "base",
        "lr": "lr",
        "frames": "frames",
        "same": "base",
        "ops": "base",
    }
    assert lay.representatives("decode") == ["base", "frames"]
    assert lay.variant_of_key("decode", keys["lr"]["decode"]) == "base"
    decode = keys["base"]["decode"]
    assert lay.fill(lay.path("decode", "data/clips.npy"), "lr") == (
        f"runs/x/shared/decode_{decode}/data/clips.npy"
    )
    assert lay.split_files("lr") == [f"runs/x/shared/decode_{decode}/splits.parquet"]
    aug = keys["lr"]["augment"]
    assert lay.fill(lay.fold_path("augment", "augment/clips.npy"), "lr", fold=0) == (
        f"runs/x/shared/augment_{aug}/fold_0/augment/clips.npy"
    )
    # a variant identical to the base reads the base's trained folds, but has its own results
    assert lay.fold_outputs("same", "metrics.json")[0] == "runs/x/base/fold_0/metrics.json"
    assert lay.variant_path("same", "summary.json") == "runs/x/same/summary.json"
    # the train rule only produces the variants that train
    train = lay.train_output("metrics.json")
    constraint = re.search(r"\{variant,([^}]*)\}", train).group(1)
    assert sorted(constraint.split("|")) == ["base", "frames", "lr"]
    assert re.fullmatch(lay.wildcard_constraints()["variant"], "same")
    assert not re.fullmatch(lay.wildcard_constraints()["variant"], "shared")


def test_nested_runs_keep_the_plain_run_and_root_each_outer_fold() -> None:
    lay = layout(outer_splits=3, n_repeats=2)
    inner = lay.inner_layout()
    assert lay.nested and inner.nested and lay.outer_folds == [0, 1, 2]
    # the plain run (the model to deploy) is unchanged
    assert lay.fold_outputs("base", "metrics.json")[0] == "runs/x/repeat_0/fold_0/metrics.json"
    assert lay.variant_path("base", "summary.json") == "runs/x/summary.json"
    # loading and decoding: once for the run; the outer split per load key
    assert inner.fill(inner.path("decode", "data/clips.npy"), "base") == "runs/x/data/clips.npy"
    assert lay.fill(lay.outer_split_path("outer_splits.parquet"), "base") == (
        "runs/x/outer_splits.parquet"
    )
    # everything of an inner cross-validation: under outer_<o>/
    assert inner.split_files("base", outer=1) == [
        "runs/x/outer_1/repeat_0/splits.parquet",
        "runs/x/outer_1/repeat_1/splits.parquet",
    ]
    assert inner.fold_outputs("base", "metrics.json", outer=2)[-1] == (
        "runs/x/outer_2/repeat_1/fold_1/metrics.json"
    )
    ck = inner.fill(inner.fold_file("variant", "checkpoints"), "base", outer=0, repeat=0, fold=1)
    assert ck == "runs/x/outer_0/checkpoints/repeat_0/fold_1"
    assert inner.variant_path("base", "summary.json", outer=0) == "runs/x/outer_0/summary.json"
    assert lay.outer_path("selection.json") == "runs/x/outer_{outer}/selection.json"
    assert lay.outer_refit_path("model.pt") == "runs/x/outer_{outer}/final/model.pt"
    # the base's own final model and the predict sets stay where they were
    assert lay.final_path("model.pt") == "runs/x/final/model.pt"


def test_nested_sweep_keeps_shared_stages_per_outer_fold() -> None:
    lay = layout({"lr": {"train": {"lr": 0.01}}}, outer_splits=2)
    inner = lay.inner_layout()
    decode, aug = lay.keys["lr"]["decode"], lay.keys["lr"]["augment"]
    assert inner.fill(inner.path("decode", "data/clips.npy"), "lr") == (
        f"runs/x/shared/decode_{decode}/data/clips.npy"
    )
    assert inner.split_files("lr", outer=1) == [
        f"runs/x/outer_1/shared/decode_{decode}/splits.parquet"
    ]
    assert inner.fill(inner.fold_path("augment", "augment/m.parquet"), "lr", outer=1, fold=0) == (
        f"runs/x/outer_1/shared/augment_{aug}/fold_0/augment/m.parquet"
    )
    assert inner.fold_outputs("lr", "history.csv", outer=0)[1] == (
        "runs/x/outer_0/lr/fold_1/history.csv"
    )
    assert lay.fill(lay.outer_refit_path("model.pt"), "lr", outer=1) == (
        "runs/x/outer_1/lr/final/model.pt"
    )
    load = lay.keys["lr"]["load"]
    assert lay.fill(lay.outer_split_path("outer_splits.parquet"), "lr") == (
        f"runs/x/shared/load_{load}/outer_splits.parquet"
    )


def test_unknown_stage_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown stage 'train'"):
        layout().root("train")


def test_a_variant_overlay_changes_only_its_own_keys() -> None:
    cfg = base_config()
    over = merge(cfg, {"augment": {"copies": 0}})
    lay = Layout.from_variants("x", {"base": cfg, "noaug": over}, cfg["cv"], sweep_on=True)
    assert lay.keys["noaug"]["decode"] == lay.keys["base"]["decode"]
    assert lay.keys["noaug"]["augment"] != lay.keys["base"]["augment"]
    assert lay.keys["noaug"]["train"] != lay.keys["base"]["train"]
