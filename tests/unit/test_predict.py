"""Predict: fold models applied to new videos, decoded as in training.

A tiny two-fold run is trained through the library on synthetic clips (seconds on CPU); the
predict sets are real small videos and broken files.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import av
import numpy as np
import pandas as pd
import pytest
import torch

from bench.synthetic import fold_inputs, write_synthetic_inputs
from fvc.data import build_clip_cache
from fvc.formats import DataError, read_metadata_source
from fvc.metrics import binary_metrics
from fvc.models import build_model, input_normalization
from fvc.predict import (
    PredictError,
    SetFiles,
    decision_threshold,
    load_model,
    model_paths,
    predict_files,
    predict_main,
    predict_set,
    prepare_predict_set,
    run_decode_settings,
    score,
    set_spec,
)
from fvc.train import FoldOutputs, FoldTarget, fit_fold
from tests.conftest import write_video

DATA = {
    "num_frames": 4,
    "size": 16,
    "short_videos": "pad",
    "resize": "letterbox",
    "positive_label": "fake",
    "fvc_filename": "{url_id}.mp4",
    "group_column": "group",
}
DECODE = {k: DATA[k] for k in ("num_frames", "size", "short_videos", "resize")}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """runs/<exp>-like folder: data/clips.*, fold_<k>/{best_model.pt, predictions.parquet}."""
    root = tmp_path_factory.mktemp("run")
    inputs = write_synthetic_inputs(root, n_videos=16, frames=4, size=16, n_folds=2)
    for k in (0, 1):
        fit_fold(
            FoldTarget(k, FoldOutputs.in_dir(root / f"fold_{k}")),
            fold_inputs(inputs, k),
            {"name": "small3d", "dropout": 0.2},
            {"epochs": 1, "batch_size": 4, "seed": 3},
            {},
            root / "checkpoints" / f"fold_{k}",
            threads=1,
        )
    return root


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four small real videos of different sizes under videos/."""
    d = tmp_path_factory.mktemp("videos")
    for i, (w, h) in enumerate([(64, 48), (48, 64), (80, 48), (32, 32)]):
        write_video(d / "videos" / f"clip{i}.mp4", frames=12, w=w, h=h)
    return d


def _paths(run: Path) -> tuple[list[Path], list[Path]]:
    models = model_paths(run)
    return models, [m.parent / "predictions.parquet" for m in models]


# ----------------------------------------------------------------------------- models


def test_fold_models_reproduce_their_out_of_fold_predictions(run: Path) -> None:
    """Same clips, same loading, same normalisation: p_fold_k equals training's prob_fake."""
    models, preds = _paths(run)
    assert [m.parent.name for m in models] == ["fold_0", "fold_1"]
    index = pd.read_parquet(run / "data" / "clips.parquet")
    scored = score(index, run / "data" / "clips.npy", models, batch_size=3)
    assert list(scored.columns[-3:]) == ["p_fold_0", "p_fold_1", "p_fake"]
    np.testing.assert_allclose(scored["p_fake"], scored[["p_fold_0", "p_fold_1"]].mean(axis=1))
    for k, path in enumerate(preds):
        oof = pd.read_parquet(path).merge(scored, on="video_id")
        assert len(oof) == 8
        np.testing.assert_allclose(oof[f"p_fold_{k}"], oof["prob_fake"], rtol=0, atol=1e-6)


def test_pretrained_name_is_not_fetched_and_its_normalisation_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model trained from KINETICS400_V1 loads from its own weights with an empty cache."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_cache"))
    cfg = {"name": "mc3_18", "weights": "KINETICS400_V1", "dropout": 0.2}
    torch.manual_seed(0)
    trained = build_model({**cfg, "weights": None}).eval()
    path = tmp_path / "fold_3" / "best_model.pt"
    path.parent.mkdir()
    torch.save(
        {
            "model_state": trained.state_dict(),
            "model": cfg,
            "epoch": 1,
            "metric": "roc_auc",
            "value": 1.0,
        },
        path,
    )
    loaded = load_model(path)
    assert loaded.name == "fold_3"
    assert loaded.norm == input_normalization(cfg)  # the weights' transforms (as in training)
    assert not (tmp_path / "empty_cache").exists()  # nothing was downloaded or cached
    for key, value in trained.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key


def test_unloadable_models_fail_with_the_file_named(tmp_path: Path) -> None:
    bad = tmp_path / "fold_0" / "best_model.pt"
    bad.parent.mkdir()
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(PredictError, match=r"fold_0/best_model.pt: cannot load model"):
        load_model(bad)
    with pytest.raises(PredictError, match=r"no fold_<k>/best_model\.pt"):
        model_paths(tmp_path / "nothing")
    with pytest.raises(PredictError) as err:
        model_paths(tmp_path, "final")
    assert str(tmp_path / "final" / "model.pt") in str(err.value)
    assert "`refit` target" in str(err.value) and "\n" not in str(err.value)


# ----------------------------------------------------------------------------- threshold


def _preds(tmp_path: Path) -> list[Path]:
    out = []
    for k, (y, p) in enumerate([([0, 1], [0.1, 0.35]), ([0, 1], [0.4, 0.8])]):
        path = tmp_path / f"fold_{k}" / "predictions.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"label": y, "prob_fake": p}).to_parquet(path)
        out.append(path)
    return out


def test_threshold_from_summary_else_eer_of_pooled_predictions(tmp_path: Path) -> None:
    preds = _preds(tmp_path)
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"threshold": {"method": "youden", "value": 0.3}}))
    assert decision_threshold(summary, preds) == (0.3, "summary.json (youden)")
    summary.write_text(json.dumps({"threshold": 0.25}))
    assert decision_threshold(summary, preds)[0] == 0.25
    # no key: the EER point of the pooled predictions, by hand: labels 0,1,0,1 with scores
    # .1,.35,.4,.8; at threshold .4 FPR = FNR = 0.5 (at .35: FPR .5, FNR 0; at .8: 0, .5)
    summary.write_text(json.dumps({"pooled_out_of_fold": {}}))
    value, origin = decision_threshold(summary, preds)
    assert value == pytest.approx(0.4) and origin.startswith("eer")
    assert decision_threshold(tmp_path / "absent.json", preds)[0] == pytest.approx(0.4)


# ----------------------------------------------------------------------------- readers


def test_sources_without_labels(tmp_path: Path, videos: Path) -> None:
    flat = videos / "videos"
    table = read_metadata_source(flat, DATA, labels=False)
    assert "label" not in table and len(table) == 4
    with pytest.raises(DataError, match="expected 2 class folders"):
        read_metadata_source(flat, DATA)  # training still needs labels
    lst = tmp_path / "set.txt"
    lst.write_text(f"# bare paths\n{flat}/clip0.mp4\n{flat}/clip1.mp4\n")
    assert read_metadata_source(lst, DATA, labels=False)["path"].tolist() == [
        f"{flat}/clip0.mp4",
        f"{flat}/clip1.mp4",
    ]
    lst.write_text(f"{flat}/clip0.mp4\n{flat}/clip1.mp4 fake\n")
    with pytest.raises(DataError, match=r"set.txt: line 1 has no label but line 2 has one"):
        read_metadata_source(lst, DATA, labels=False)
    csv = tmp_path / "set.csv"
    pd.DataFrame({"path": ["videos/clip0.mp4"]}).to_csv(csv, index=False)
    assert "label" not in read_metadata_source(csv, {**DATA, "root": str(videos)}, labels=False)


def test_set_spec_and_missing_source(tmp_path: Path) -> None:
    assert set_spec("a", "x.csv") == {"metadata": "x.csv", "root": None, "format": "auto"}
    assert set_spec("a", {"metadata": "x", "format": "list"})["format"] == "list"
    with pytest.raises(PredictError, match=r"predict.sets.a: unknown key\(s\) labels"):
        set_spec("a", {"metadata": "x", "labels": True})
    with pytest.raises(PredictError, match=r"^predict.sets.gone: .*nope.csv does not exist$"):
        prepare_predict_set(
            "gone", set_spec("gone", str(tmp_path / "nope.csv")), DATA, SetFiles.in_dir(tmp_path)
        )


# ----------------------------------------------------------------------------- a whole set


def _prepare(name: str, source: Path, out: Path, cache: Path | None = None) -> pd.DataFrame:
    index, _ = prepare_predict_set(
        name, set_spec(name, str(source)), DATA, SetFiles.in_dir(out), workers=1, cache_dir=cache
    )
    return index


def _predict(name: str, run: Path, data: Path, out: Path, **kw: Any) -> dict[str, Any]:
    models, preds = _paths(run)
    return predict_set(
        name,
        data / "clips.npy",
        data / "clips.parquet",
        data / "excluded.tsv",
        models,
        run / "summary.json",
        preds,
        out / f"{name}.parquet",
        out / f"{name}_excluded.tsv",
        out / f"{name}_metrics.json",
        **kw,
    )


def test_labelled_set_with_broken_files(
    run: Path, videos: Path, broken_videos: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    broken = {k: broken_videos[k] for k in ("missing", "empty", "text", "bitflip")}
    rows = [(f"videos/clip{i}.mp4", "fake" if i % 2 else "real") for i in range(4)]
    rows += [(str(b["path"]), "fake") for b in broken.values()]
    source = videos / "labelled.csv"
    pd.DataFrame(rows, columns=["path", "label"]).to_csv(source, index=False)
    _prepare("lab", source, tmp_path / "data", tmp_path / "cache")
    result = _predict("lab", run, tmp_path / "data", tmp_path / "out")

    table = pd.read_parquet(tmp_path / "out" / "lab.parquet")
    assert [Path(p).name for p in table["path"]] == [f"clip{i}.mp4" for i in range(4)]
    assert table["label"].tolist() == [0, 1, 0, 1]
    assert (table["decision"] == (table["p_fake"] >= table["threshold"]).astype(int)).all()
    np.testing.assert_allclose(table["p_fake"], table[["p_fold_0", "p_fold_1"]].mean(axis=1))
    assert table["threshold"].nunique() == 1
    excluded = pd.read_csv(tmp_path / "out" / "lab_excluded.tsv", sep="\t")
    reasons = dict(zip(excluded["path"], excluded["reason"], strict=True))
    assert set(reasons) == {str(b["path"]) for b in broken.values()}
    for b in broken.values():
        assert reasons[str(b["path"])].startswith(b["reason"])

    metrics = json.loads((tmp_path / "out" / "lab_metrics.json").read_text())
    assert metrics == json.loads(json.dumps(result))
    expected = binary_metrics(table["label"], table["p_fake"], metrics["threshold"])
    assert {k: metrics[k] for k in expected} == pytest.approx(expected)
    assert (metrics["labelled"], metrics["n_videos"], metrics["n_excluded"]) == (True, 4, 4)
    assert set(metrics["per_model"]) == {"fold_0", "fold_1"}


def test_unlabelled_set_and_incremental_decode(run: Path, videos: Path, tmp_path: Path) -> None:
    folder = tmp_path / "new"
    shutil.copytree(videos / "videos", folder)
    cache = tmp_path / "cache"
    first = _prepare("new", folder, tmp_path / "d1", cache)
    assert first.attrs == {"decoded": 4, "reused": 0}
    write_video(folder / "sub" / "late.webm", frames=10, w=40, h=40, codec="vp9")
    second = _prepare("new", folder, tmp_path / "d2", cache)
    assert second.attrs == {"decoded": 1, "reused": 4}  # only the added video is decoded
    result = _predict("new", run, tmp_path / "d2", tmp_path / "out")
    assert not result["labelled"] and "roc_auc" not in result
    table = pd.read_parquet(tmp_path / "out" / "new.parquet")
    assert len(table) == 5 and table["label"].isna().all()
    assert (table["decision"] == (table["p_fake"] >= result["threshold"]).astype(int)).all()


def test_decode_settings_travel_with_the_clips(run: Path, videos: Path, tmp_path: Path) -> None:
    """The CLI decodes like training: the settings are read from the run's clips.parquet."""
    with pytest.raises(PredictError, match="no decode settings recorded"):
        run_decode_settings(run)  # synthetic inputs were not written by preprocess
    src = tmp_path / "src.csv"
    pd.DataFrame({"path": [str(videos / "videos" / "clip0.mp4")], "label": ["real"]}).to_csv(
        src, index=False
    )
    from fvc.data import load_metadata

    load_metadata(DATA, src, tmp_path / "m.parquet", tmp_path / "x.tsv", 0)
    build_clip_cache(
        tmp_path / "m.parquet",
        tmp_path / "data" / "clips.npy",
        tmp_path / "data" / "clips.parquet",
        tmp_path / "dx.tsv",
        DECODE,
        min_per_class=0,
    )
    assert run_decode_settings(tmp_path) == DECODE


def test_cli_prints_a_table(
    run: Path, videos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cli_run = tmp_path / "run"
    shutil.copytree(run, cli_run)
    index = pd.read_parquet(cli_run / "data" / "clips.parquet")
    index.attrs = {"decode_settings": json.dumps({**DECODE, "decoder": "av 0"})}
    index.to_parquet(cli_run / "data" / "clips.parquet")
    a, b = videos / "videos" / "clip0.mp4", videos / "videos" / "clip3.mp4"
    assert predict_main([str(cli_run), str(a), str(b)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["path", "p_fold_0", "p_fold_1", "p_fake", "decision", "reason"]
    assert [line.split()[0] for line in lines[1:3]] == [str(a), str(b)]
    assert lines[3].startswith("threshold: ")
    threshold = float(lines[3].split()[1])
    for line in lines[1:3]:
        p0, p1, p = map(float, line.split()[1:4])
        assert p == pytest.approx((p0 + p1) / 2, abs=1e-4)
        assert line.split()[4] == ("1" if p >= threshold else "0")  # no metadata: class 1/0
    assert predict_main([str(cli_run), str(a), str(tmp_path / "gone.mp4")]) == 2
    assert "missing file" in capsys.readouterr().out
    assert predict_main([str(tmp_path / "nothing"), str(a)]) == 1
    assert "no fold_<k>/best_model.pt" in capsys.readouterr().err


def test_nan_metrics_are_null(run: Path, videos: Path, tmp_path: Path) -> None:
    """A set of one class has no ROC-AUC: null in the JSON, not NaN."""
    source = tmp_path / "fakes.csv"
    pd.DataFrame({"path": [str(videos / "videos" / "clip1.mp4")], "label": ["fake"]}).to_csv(
        source, index=False
    )
    _prepare("fakes", source, tmp_path / "d")
    result = _predict("fakes", run, tmp_path / "d", tmp_path / "out")
    text = (tmp_path / "out" / "fakes_metrics.json").read_text()
    assert "NaN" not in text and json.loads(text)["roc_auc"] is None
    assert result["labelled"] and not math.isnan(result["accuracy"])


@pytest.mark.parametrize(
    ("layout_name", "cv", "sweep"),
    [
        ("repeats", {"n_repeats": 2}, {}),
        ("sweep", {}, {"lr": {"train": {"lr": 0.01}}}),
        ("sweep_repeats_nested", {"n_repeats": 2, "outer_splits": 2}, {"s": {"model": {}}}),
    ],
)
def test_fvc_predict_uses_the_predict_rules_models_on_every_layout(
    run: Path, videos: Path, tmp_path: Path, layout_name: str, cv: dict, sweep: dict
) -> None:
    """The plain run's files moved to where another layout keeps them (layout.json says where):
    fvc predict scores with the same fold models (the base variant's, repeat 0's) and says so;
    decoys at the paths a plain run would use must not be picked up."""
    from fvc.config import defaults
    from fvc.layout import Layout, write_record
    from fvc.sweep import variant_configs

    plain = tmp_path / "plain"
    shutil.copytree(run, plain)
    index = pd.read_parquet(plain / "data" / "clips.parquet")
    index.attrs = {"decode_settings": json.dumps({**DECODE, "decoder": f"av {av.__version__}"})}
    index.to_parquet(plain / "data" / "clips.parquet")
    a, b = videos / "videos" / "clip0.mp4", videos / "videos" / "clip3.mp4"
    want = predict_files(plain, [a, b])
    assert want.attrs["scored_with"].startswith("2 fold models (")

    cfg = {s: defaults(s) for s in ("data", "augment", "model", "train", "memory")}
    cfg["cv"] = {**defaults("cv"), "n_splits": 2, **cv}
    lay = Layout.from_variants(
        "exp", variant_configs({**cfg, "sweep": sweep}), cfg["cv"], sweep_on=bool(sweep)
    )
    moved = tmp_path / "runs" / "exp"
    for name in ("best_model.pt", "predictions.parquet"):
        for k, dest in enumerate(lay.ensemble_outputs(name)):
            (moved / lay.relative(dest)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(plain / f"fold_{k}" / name, moved / lay.relative(dest))
    clips = moved / lay.relative(lay.base_path("decode", "data/clips.parquet"))
    clips.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(plain / "data" / "clips.parquet", clips)
    write_record(lay, str(moved / Layout.RECORD))
    # decoys: a plain run's fold models next to them, of another training (never to be used)
    if layout_name != "repeats":
        for k in (0, 1):
            (moved / f"fold_{k}").mkdir(exist_ok=True)
            (moved / f"fold_{k}" / "best_model.pt").write_bytes(b"not this one")
    got = predict_files(moved, [a, b])
    cols = ["p_fold_0", "p_fold_1", "p_fake", "decision"]
    pd.testing.assert_frame_equal(got[cols], want[cols])
    said = got.attrs["scored_with"]
    assert ("base variant's" in said) == bool(sweep)
    assert ("repeat 0's" in said) == (cv.get("n_repeats", 1) > 1)
    assert str(moved / lay.relative(lay.ensemble_outputs("best_model.pt")[0])).startswith(
        said.split("(")[1].split("/fold_<k>")[0]
    )
