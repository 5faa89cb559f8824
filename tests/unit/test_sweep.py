"""Sweep variants: overlay merge, validation messages, stage keys and repeat seeds."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fvc.sweep import (
    SweepError,
    merge,
    repeat_seed,
    schema_error,
    stage_keys,
    trained_by,
    variant_configs,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def schema() -> dict:
    return yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())


@pytest.fixture()
def config() -> dict:
    return yaml.safe_load((REPO / "config/config.yaml").read_text())


def test_merge_is_recursive_and_does_not_touch_the_base() -> None:
    base = {"train": {"lr": 1.0, "epochs": 3}, "model": {"name": "a"}}
    out = merge(base, {"train": {"lr": 2.0}})
    assert out == {"train": {"lr": 2.0, "epochs": 3}, "model": {"name": "a"}}
    assert base["train"]["lr"] == 1.0


def test_variant_configs_base_first_and_without_sweep(config: dict) -> None:
    config["sweep"] = {"lr_low": {"train": {"lr": 0.0003}}, "same": {}, "empty": None}
    variants = variant_configs(config)
    assert list(variants) == ["base", "lr_low", "same", "empty"]
    assert all("sweep" not in cfg for cfg in variants.values())
    assert variants["lr_low"]["train"]["lr"] == 0.0003
    assert variants["lr_low"]["train"]["epochs"] == config["train"]["epochs"]
    assert variants["same"] == variants["base"] == variants["empty"]


@pytest.mark.parametrize(
    ("overlay", "message"),
    [
        ({"cv": {"seed": 1}}, r"sweep\.v\.cv: a variant may overlay only model, train"),
        ({"data": {"demo": {"sources": 3}}}, r"sweep\.v\.data\.demo: cannot differ"),
        ({"data": {"workers": 4}}, r"sweep\.v\.data\.workers: cannot differ"),
        ([1, 2], r"sweep\.v: expected a mapping"),
    ],
)
def test_variant_configs_rejects_what_cannot_vary(config: dict, overlay, message: str) -> None:
    config["sweep"] = {"v": overlay}
    with pytest.raises(SweepError, match=message):
        variant_configs(config)


def test_baseline_name_is_reserved(config: dict) -> None:
    config["sweep"] = {"base": {}}
    with pytest.raises(SweepError, match=r"sweep\.base: 'base' is the baseline's name"):
        variant_configs(config)


def test_schema_error_names_variant_and_key(config: dict, schema: dict) -> None:
    config["sweep"] = {"typo": {"train": {"lrr": 0.1}}, "neg": {"train": {"lr": -1}}}
    variants = variant_configs(config)
    assert schema_error(variants["base"], schema) is None
    typo = schema_error(variants["typo"], schema, prefix="sweep.typo")
    assert typo.startswith("sweep.typo.train: ") and "'lrr' was unexpected" in typo
    neg = schema_error(variants["neg"], schema, prefix="sweep.neg")
    assert neg.startswith("sweep.neg.train.lr: ")


def test_stage_keys_share_exactly_the_upstream_stages(config: dict) -> None:
    config["sweep"] = {
        "lr_a": {"train": {"lr": 0.01}},
        "lr_b": {"train": {"lr": 0.02}},
        "size": {"data": {"size": 32}},
        "frames": {"data": {"num_frames": 4}},
        "aug": {"augment": {"copies": 2}},
        "meta": {"data": {"metadata": "other.csv"}},
        "same": {},
    }
    keys = {n: stage_keys(c) for n, c in variant_configs(config).items()}
    base = keys["base"]
    for name in ("lr_a", "lr_b"):
        assert {s: keys[name][s] == base[s] for s in base} == {
            "load": True,
            "decode": True,
            "augment": True,
            "train": False,
        }
    assert keys["lr_a"]["train"] != keys["lr_b"]["train"]
    for name in ("size", "frames"):
        assert keys[name]["load"] == base["load"]
        assert keys[name]["decode"] != base["decode"]
        assert keys[name]["augment"] != base["augment"]  # chained: new clips, new augment
    assert keys["aug"]["decode"] == base["decode"] and keys["aug"]["augment"] != base["augment"]
    assert keys["meta"]["load"] != base["load"]
    assert keys["same"] == base
    assert trained_by(keys)["same"] == "base" and trained_by(keys)["lr_a"] == "lr_a"


def test_keys_ignore_operational_data_workers(config: dict) -> None:
    other = merge(config, {"data": {"workers": 7}})
    assert stage_keys(other) == stage_keys(config)


def test_repeat_seed() -> None:
    assert repeat_seed(42, 0) == 42  # repeat 0 is plain K-fold with cv.seed
    seeds = [repeat_seed(42, r) for r in range(1, 6)]
    assert len(set(seeds)) == 5 and 42 not in seeds
    assert repeat_seed(42, 1) == repeat_seed(42, 1) != repeat_seed(43, 1)
    assert all(0 <= s < 2**32 for s in seeds)
