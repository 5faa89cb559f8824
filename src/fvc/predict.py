"""Predict: the trained models applied to new videos.

A predict set (``predict.sets: {name: metadata-or-folder}``) is read with the same readers as
``data.metadata`` (:mod:`fvc.formats`; labels optional), probed and decoded by the same code as
the training set (:func:`fvc.data.probe_videos`, :func:`fvc.data.build_clip_cache` with its own
incremental decode cache), so a video is decoded exactly as in training. Each fold's
``best_model.pt`` scores every usable clip; the ensemble P(fake) is the mean of the fold
models' P(fake), and the decision applies the threshold chosen on the pooled out-of-fold
predictions (:func:`decision_threshold`), never one tuned on the predict set itself.

Outputs (docs/artifacts.md): ``<name>.parquet`` (one row per usable video), ``<name>_excluded.tsv``
(every excluded video with its reason) and ``<name>_metrics.json`` (the metrics of the CV
summary when the set is labelled: cross-dataset evaluation). ``fvc predict runs/<exp> a.mp4``
(:func:`predict_main`) does the same for a few files without Snakemake and prints a table.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from fvc.config import default, schema
from fvc.data import EXCLUDED_COLUMNS, build_clip_cache, list_videos, probe_videos
from fvc.datasets import ClipSet, input_norm
from fvc.formats import DataError, read_metadata_source
from fvc.io import write_json, write_parquet, write_tsv
from fvc.metrics import binary_metrics, choose_threshold, score_metrics

log = logging.getLogger(__name__)

#: ``predict.model`` values: the K fold models averaged, or the refit model.
MODEL_KINDS = tuple(schema()["properties"]["predict"]["properties"]["model"]["enum"])
#: Where the ``refit`` target writes the final model, relative to ``runs/<exp>``.
FINAL_MODEL = Path("final") / "model.pt"
#: The keys of a predict set's source (``predict.sets.<name>`` as a mapping), with defaults.
SOURCE_DEFAULTS = {
    k: p.get("default")
    for k, p in schema()["properties"]["predict"]["properties"]["sets"]["additionalProperties"][
        "oneOf"
    ][1]["properties"].items()
}
SOURCE_KEYS = tuple(SOURCE_DEFAULTS)

_FOLD_DIR = re.compile(r"^fold_(\d+)$")


class PredictError(ValueError):
    """A predict input cannot be used; the message is one line naming the file or key."""


# ----------------------------------------------------------------------------- set spec


def set_spec(name: str, value: Any) -> dict[str, Any]:
    """``predict.sets.<name>`` as ``{metadata, root, format}``.

    The value is a path (file or folder: any format ``data.metadata`` accepts) or a mapping
    with ``metadata`` and optionally ``root`` (relative paths start there; default: the
    metadata's folder, never ``data.root``, which belongs to the training set) and ``format``.
    """
    if isinstance(value, str | os.PathLike):
        spec: dict[str, Any] = {"metadata": str(value)}
    elif isinstance(value, dict) and value.get("metadata"):
        unknown = sorted(set(value) - set(SOURCE_KEYS))
        if unknown:
            raise PredictError(f"predict.sets.{name}: unknown key(s) {', '.join(unknown)}")
        spec = dict(value)
    else:
        raise PredictError(
            f"predict.sets.{name}: expected a metadata path or folder, or a mapping with "
            f"'metadata' (+ optional root, format), got {value!r}"
        )
    full = {**SOURCE_DEFAULTS, **{k: v for k, v in spec.items() if v is not None}}
    return {**full, "metadata": str(full["metadata"])}


def check_source(name: str, spec: dict[str, Any]) -> None:
    """One line naming ``predict.sets.<name>`` when its metadata or root does not exist."""
    if not Path(spec["metadata"]).exists():
        raise PredictError(f"predict.sets.{name}: {spec['metadata']} does not exist")
    if spec.get("root") and not Path(os.path.expanduser(spec["root"])).is_dir():
        raise PredictError(f"predict.sets.{name}: root {spec['root']} is not a folder")


def source_config(data_cfg: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """The training ``data`` config with the predict set's source keys in place of its own."""
    return {**data_cfg, **{k: spec.get(k) for k in SOURCE_KEYS}}


# ----------------------------------------------------------------------------- decoding


def _write_excluded(path: str | os.PathLike[str], frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    parts = [f for f in frames if len(f)]
    excl = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=EXCLUDED_COLUMNS)
    excl = excl[EXCLUDED_COLUMNS].sort_values("row", kind="stable").reset_index(drop=True)
    write_tsv(path, excl)
    return excl


@dataclass
class SetFiles:
    """A decoded set of videos (the predict_data rule's outputs, docs/artifacts.md)."""

    metadata: str | os.PathLike[str]
    clips: str | os.PathLike[str]
    index: str | os.PathLike[str]
    excluded: str | os.PathLike[str]

    @classmethod
    def in_dir(cls, folder: str | os.PathLike[str]) -> SetFiles:
        names = ("metadata.parquet", "clips.npy", "clips.parquet", "excluded.tsv")
        return cls(*(Path(folder) / n for n in names))


def decode_videos(
    table: pd.DataFrame,
    data_cfg: dict[str, Any],
    source: str,
    out: SetFiles,
    workers: int = 1,
    cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Probe and decode the videos of a read source exactly as training does.

    ``table`` is :func:`fvc.formats.read_metadata_source`'s result (labels optional). Writes
    the probed metadata, the clip array and its index (:func:`fvc.data.build_clip_cache`,
    incremental with ``cache_dir``), and one excluded table for probe and decode failures.
    No class minimum: a predict set may hold one class, or none. Returns (index, excluded).
    """
    if table.empty:
        raise DataError(f"{source}: no videos listed")
    table, _ = list_videos(table, data_cfg, source)
    meta, probe_excl = probe_videos(table, source, max(1, int(workers)))
    write_parquet(out.metadata, meta)
    with tempfile.TemporaryDirectory(dir=Path(out.excluded).parent) as tmp:
        decode_excl = Path(tmp) / "decode_excluded.tsv"
        index = build_clip_cache(
            out.metadata,
            out.clips,
            out.index,
            decode_excl,
            data_cfg,
            workers=workers,
            min_per_class=0,
            cache_dir=cache_dir,
        )
        excl = _write_excluded(
            out.excluded,
            [
                probe_excl,
                pd.read_csv(decode_excl, sep="\t", dtype={"label": str}, keep_default_na=False),
            ],
        )
    log.info("%s: %d usable videos, %d excluded", source, len(index), len(excl))
    return index, excl


def prepare_predict_set(
    name: str,
    spec: dict[str, Any],
    data_cfg: dict[str, Any],
    out: SetFiles,
    workers: int = 1,
    cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read, probe and decode predict set ``name`` (rule ``predict_data``).

    ``data_cfg`` is the training ``data`` section (decode settings, ``positive_label``,
    ``fvc_filename``, ``group_column``); ``spec`` (:func:`set_spec`) replaces its source keys.
    Errors are one line starting with ``predict.sets.<name>``.
    """
    check_source(name, spec)
    cfg = source_config(data_cfg, spec)
    try:
        table = read_metadata_source(spec["metadata"], cfg, labels=False)
        return decode_videos(
            table, cfg, str(spec["metadata"]), out, workers=workers, cache_dir=cache_dir
        )
    except DataError as exc:
        raise DataError(f"predict.sets.{name}: {exc}") from None


# ----------------------------------------------------------------------------- models


@dataclass
class LoadedModel:
    """One scoring model: ``name`` is its column suffix (``fold_0``, ``final``)."""

    name: str
    model: nn.Module
    norm: tuple[tuple[float, ...], tuple[float, ...]]
    path: Path


def model_name(path: str | os.PathLike[str]) -> str:
    """``fold_<k>`` for ``.../fold_<k>/best_model.pt``, else ``final``."""
    parent = Path(path).parent.name
    return parent if _FOLD_DIR.match(parent) else "final"


def load_model(path: str | os.PathLike[str]) -> LoadedModel:
    """Rebuild a saved model (``best_model.pt``'s dict, written by :mod:`fvc.train.publish`).

    The architecture is built from the saved ``model`` config WITHOUT its pretrained weights
    (a torchvision weight name would otherwise fetch Kinetics weights only to overwrite them),
    then the saved ``model_state`` is loaded strictly. The input normalisation is the one
    training used (:func:`fvc.models.input_normalization` of the saved config). The one place
    that knows the file's layout, so a change in how best weights are stored is one edit.
    """
    from fvc.models import build_model, input_normalization

    path = Path(path)
    if not path.is_file():
        raise PredictError(f"{path}: model file does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise PredictError(f"{path}: cannot load model: {' '.join(str(exc).split())}") from None
    if not isinstance(state, dict) or "model_state" not in state or "model" not in state:
        raise PredictError(f"{path}: not a best_model.pt dict (needs model_state and model)")
    model_cfg = dict(state["model"])
    model = build_model({**model_cfg, "weights": None}, progress=False)
    try:
        model.load_state_dict(state["model_state"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise PredictError(
            f"{path}: weights do not fit model {model_cfg.get('name')}: {first}"
        ) from None
    model.eval()
    return LoadedModel(model_name(path), model, input_normalization(model_cfg), path)


@dataclass
class RunModels:
    """The models of a finished run that score new videos, and what goes with them."""

    models: list[Path]
    index: Path  # the training clips.parquet: the decode settings to decode like training
    metadata: Path  # the training metadata.parquet: the class names
    summary: Path  # the threshold chosen on the pooled out-of-fold predictions
    predictions: list[Path]  # those out-of-fold predictions (the threshold's fallback)
    description: str


def run_models(run_dir: str | os.PathLike[str], kind: str = "ensemble") -> RunModels:
    """The models the ``predict`` rule uses, on every run layout (plain, repeats, sweep,
    nested): the base variant's fold models of repeat 0 (``predict.model: ensemble``) or the
    refit model ``final/model.pt`` (``final``). The layout comes from the run's
    ``layout.json`` (written by the workflow); a run without one is read as a plain run.
    """
    from fvc.layout import Layout

    run = Path(run_dir)
    if kind not in MODEL_KINDS:
        raise PredictError(f"predict.model: {kind!r} is not one of {', '.join(MODEL_KINDS)}")
    record = run / Layout.RECORD
    if record.is_file():
        layout = Layout.from_record(json.loads(record.read_text()))
        models = [run / layout.relative(p) for p in layout.ensemble_outputs("best_model.pt")]
        predictions = [
            run / layout.relative(p) for p in layout.ensemble_outputs("predictions.parquet")
        ]
        index = run / layout.relative(layout.base_path("decode", "data/clips.parquet"))
        metadata = run / layout.relative(layout.base_path("load", "data/metadata.parquet"))
        summary = run / layout.relative(layout.variant_path("base", "summary.json"))
        where = ("the base variant's " if layout.sweep else "") + (
            "repeat 0's " if layout.n_repeats > 1 else ""
        )
    else:  # a plain run made before layout.json existed
        folds = sorted(
            (int(m.group(1)), d)
            for d in (run.iterdir() if run.is_dir() else [])
            if (m := _FOLD_DIR.match(d.name))
        )
        models = [d / "best_model.pt" for _, d in folds]
        predictions = [d / "predictions.parquet" for _, d in folds]
        index, metadata = run / "data" / "clips.parquet", run / "data" / "metadata.parquet"
        summary, where = run / "summary.json", ""
    if kind == "final":
        path = run / FINAL_MODEL
        if not path.is_file():
            raise PredictError(final_missing_message(path))
        return RunModels([path], index, metadata, summary, predictions, f"the final model {path}")
    missing = [p for p in models if not p.is_file()]
    if not models or missing:
        gone = f" ({missing[0]} is missing)" if missing else ""
        raise PredictError(f"{run}: no fold_<k>/best_model.pt{gone} (train the folds first)")
    common = os.path.commonpath([str(p.parent.parent) for p in models])
    text = f"{where}{len(models)} fold models ({common}/fold_<k>/best_model.pt)"
    return RunModels(models, index, metadata, summary, predictions, text)


def model_paths(run_dir: str | os.PathLike[str], kind: str = "ensemble") -> list[Path]:
    """The model files of ``run_dir`` that score new videos (:func:`run_models`)."""
    return run_models(run_dir, kind).models


def final_missing_message(path: str | os.PathLike[str]) -> str:
    """One line for ``predict.model: final`` without the refit model."""
    return (
        f"predict.model: final needs {path}, which the `refit` target builds "
        "(`snakemake refit`); build it first or use predict.model: ensemble"
    )


def evaluate_clips(
    model: LoadedModel, clips: ClipSet, device: torch.device, batch_size: int
) -> np.ndarray:
    """P(fake) per clip with the training loop's evaluation (OOM-aware batch halving)."""
    from fvc.train import evaluate

    if len(clips) == 0:
        return np.empty(0, dtype=np.float64)
    model.model.to(device)
    with torch.inference_mode():
        _, probs, _ = evaluate(model.model, clips, input_norm(device, *model.norm), batch_size)
    return probs


def score(
    index: pd.DataFrame,
    clips_path: str | os.PathLike[str],
    models: Sequence[str | os.PathLike[str]],
    device: str | torch.device = "cpu",
    batch_size: int = default("train", "batch_size"),
) -> pd.DataFrame:
    """``index`` plus ``p_<model>`` per model and their mean ``p_fake``.

    Models are loaded one at a time (only one is in memory); clips are read from the
    memory-mapped array in batches.
    """
    dev = torch.device(device)
    rows = index["clip_row"].to_numpy() if len(index) else np.empty(0, dtype=np.int64)
    clips = ClipSet([str(clips_path)], np.zeros(len(rows)), rows, np.zeros(len(rows)))
    out = index.copy()
    columns = []
    for path in models:
        loaded = load_model(path)
        column = f"p_{loaded.name}"
        if column in out.columns:
            raise PredictError(f"{path}: a second model named {loaded.name}")
        out[column] = evaluate_clips(loaded, clips, dev, batch_size)
        columns.append(column)
        log.info("scored %d clips with %s", len(rows), path)
        del loaded
    out["p_fake"] = out[columns].mean(axis=1) if columns else np.nan
    return out


# ----------------------------------------------------------------------------- threshold


def decision_threshold(
    summary_path: str | os.PathLike[str] | None,
    predictions_paths: Sequence[str | os.PathLike[str]] = (),
) -> tuple[float, str]:
    """The decision threshold chosen on the pooled out-of-fold predictions, and its origin.

    Read from ``summary.json``'s ``threshold`` (``{"method": ..., "value": ...}`` as the
    aggregate rule writes it, or a plain number); when that key is absent, computed here with
    the EER criterion from the pooled ``fold_<k>/predictions.parquet``.
    """
    if summary_path and Path(summary_path).is_file():
        summary = json.loads(Path(summary_path).read_text())
        entry = summary.get("threshold")
        method = "summary"
        if isinstance(entry, dict):
            method, entry = str(entry.get("method", method)), entry.get("value")
        if isinstance(entry, int | float) and math.isfinite(entry):
            return float(entry), f"{Path(summary_path).name} ({method})"
    if not predictions_paths:
        raise PredictError(
            f"{summary_path}: no threshold, and no out-of-fold predictions to choose one"
        )
    pooled = pd.concat([pd.read_parquet(p) for p in predictions_paths], ignore_index=True)
    value = choose_threshold(pooled["label"].to_numpy(), pooled["prob_fake"].to_numpy(), "eer")
    return value, "eer on the pooled out-of-fold predictions"


# ----------------------------------------------------------------------------- results


def _json_num(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def set_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, Any]:
    """The pooled metrics of the CV summary, at ``threshold`` (NaN -> null)."""
    metrics = {**binary_metrics(y, p, threshold), **score_metrics(y, p)}
    return {k: _json_num(v) for k, v in metrics.items()}


def decide(table: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Add ``decision`` (1 = positive class, P(fake) >= threshold) and ``threshold``."""
    return table.assign(
        decision=(table["p_fake"].to_numpy() >= threshold).astype(np.int8), threshold=threshold
    )


def predict_set(
    name: str,
    clips: str | os.PathLike[str],
    index: str | os.PathLike[str],
    excluded: str | os.PathLike[str],
    models: Sequence[str | os.PathLike[str]],
    summary: str | os.PathLike[str] | None,
    predictions: Sequence[str | os.PathLike[str]],
    out_table: str | os.PathLike[str],
    out_excluded: str | os.PathLike[str],
    out_metrics: str | os.PathLike[str],
    model_kind: str = "ensemble",
    device: str = "cpu",
    batch_size: int = default("train", "batch_size"),
    train_index: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Score a decoded predict set and write its table, excluded list and metrics (rule predict).

    With ``train_index`` (the training ``clips.parquet``) the set must have been decoded with
    the training's decode settings. ``<name>_metrics.json`` is always written: with labels it
    holds :func:`set_metrics` of the ensemble (and of each model under ``per_model``), without
    labels only the counts, the threshold and ``"labelled": false``.
    """
    idx = pd.read_parquet(index)
    if train_index is not None:
        want = pd.read_parquet(train_index).attrs.get("decode_settings")
        got = idx.attrs.get("decode_settings")
        if want and got and want != got:
            raise PredictError(
                f"{index}: decoded with {got}, the models were trained on {want}; rerun "
                "predict_data"
            )
    threshold, origin = decision_threshold(summary, predictions)
    table = decide(score(idx, clips, models, device, batch_size), threshold)
    labelled = bool(len(table)) and bool((table["label"] >= 0).all())
    model_cols = [c for c in table.columns if c.startswith("p_") and c != "p_fake"]
    table["label"] = table["label"].astype("Int8").where(table["label"] >= 0, pd.NA)
    cols = [
        "video_id",
        "path",
        "label",
        "label_name",
        "group",
        "padded",
        *model_cols,
        "p_fake",
        "decision",
        "threshold",
    ]
    excl = pd.read_csv(excluded, sep="\t", dtype={"label": str}, keep_default_na=False)
    result: dict[str, Any] = {
        "set": name,
        "model": model_kind,
        "n_models": len(model_cols),
        "n_videos": len(table),
        "n_excluded": len(excl),
        "labelled": labelled,
        "threshold": threshold,
        "threshold_source": origin,
    }
    if labelled:
        y = table["label"].to_numpy(dtype=np.int64)
        result.update(set_metrics(y, table["p_fake"].to_numpy(), threshold))
        result["per_model"] = {
            c.removeprefix("p_"): set_metrics(y, table[c].to_numpy(), threshold) for c in model_cols
        }
    write_tsv(out_excluded, excl)
    write_parquet(out_table, table[cols])
    write_json(out_metrics, result)
    log.info(
        "predict set %s: %d videos scored by %d model(s), %d excluded; threshold %.4f (%s)%s",
        name,
        len(table),
        len(model_cols),
        len(excl),
        threshold,
        origin,
        f"; ROC-AUC {result['roc_auc']}, accuracy {result['accuracy']}" if labelled else "",
    )
    return result


# ----------------------------------------------------------------------------- command line


def run_decode_settings(
    run_dir: str | os.PathLike[str], index: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """The decode settings the run's training clips were made with.

    Recorded by preprocess in the training ``clips.parquet`` (``index``, default
    ``data/clips.parquet``: ``decode_settings``); for runs made before that, the decode
    cache's index (``cache/decode/index.parquet`` next to it) holds them too.
    """
    index = Path(index) if index is not None else Path(run_dir) / "data" / "clips.parquet"
    text = None
    if index.is_file():
        text = pd.read_parquet(index, columns=["clip_row"]).attrs.get("decode_settings")
    cache = index.parent.parent / "cache" / "decode" / "index.parquet"
    if not text and cache.is_file():
        settings = pd.read_parquet(cache, columns=["settings"])["settings"]
        text = str(settings.iloc[0]) if len(settings) else None
    if not text:
        raise PredictError(
            f"{index}: no decode settings recorded (missing, or written by an older version); "
            "rerun preprocess (snakemake --forcerun preprocess)"
        )
    settings = json.loads(text)
    decoder = settings.pop("decoder", None)
    import av

    if decoder and decoder != f"av {av.__version__}":
        log.warning("training clips were decoded with %s, now av %s", decoder, av.__version__)
    return settings


def class_names(metadata: str | os.PathLike[str]) -> dict[int, str]:
    """``{1: 'fake', 0: 'real'}`` as the run's metadata names them (else 1/0 as text)."""
    names = {1: "1", 0: "0"}
    meta = Path(metadata)
    if meta.is_file():
        df = pd.read_parquet(meta, columns=["label", "label_name"])
        for c in (0, 1):
            found = df.loc[df["label"] == c, "label_name"]
            if len(found):
                names[c] = str(found.iloc[0])
    return names


def predict_files(
    run_dir: str | os.PathLike[str],
    files: Sequence[str | os.PathLike[str]],
    model_kind: str = "ensemble",
    device: str = "cpu",
    batch_size: int = default("train", "batch_size"),
    workers: int = 1,
) -> pd.DataFrame:
    """Score a few video files with a finished run: one row per file, in the given order.

    Usable files get ``p_<model>``, ``p_fake``, ``decision``; excluded ones their ``reason``.
    Decoded with the run's recorded decode settings (:func:`run_decode_settings`) into a
    temporary folder (nothing is written to the run). ``attrs``: ``scored_with`` (which models,
    :func:`run_models`) and the run's ``class_names``.
    """
    found = run_models(run_dir, model_kind)
    models = found.models
    settings = run_decode_settings(run_dir, found.index)
    threshold, _ = decision_threshold(found.summary, found.predictions)
    table = pd.DataFrame(
        {"row": np.arange(1, len(files) + 1), "path": [os.path.abspath(f) for f in files]}
    )
    with tempfile.TemporaryDirectory(prefix="fvc_predict_") as tmp:
        t = Path(tmp)
        index, excl = decode_videos(
            table, settings, "command line", SetFiles.in_dir(t), workers=workers
        )
        scored = decide(score(index, t / "clips.npy", models, device, batch_size), threshold)
    model_cols = [c for c in scored.columns if c.startswith("p_")]
    out = table[["row", "path"]].merge(
        scored.assign(row=scored["video_id"].str[1:].astype(int))[
            ["row", *model_cols, "decision", "threshold"]
        ],
        on="row",
        how="left",
    )
    reasons = dict(zip(excl["row"].astype(int), excl["reason"], strict=True))
    out["reason"] = [reasons.get(int(r), "") for r in out["row"]]
    out = out.drop(columns="row")
    out.attrs = {"scored_with": found.description, "class_names": class_names(found.metadata)}
    return out


def format_table(df: pd.DataFrame, names: dict[int, str]) -> str:
    """The table ``fvc predict`` prints: probabilities to 4 places, decisions by class name."""
    shown = df.copy()
    shown["decision"] = [names[int(d)] if pd.notna(d) else "excluded" for d in shown["decision"]]
    for c in [c for c in shown.columns if c.startswith("p_")]:
        shown[c] = [f"{v:.4f}" if pd.notna(v) else "-" for v in shown[c]]
    shown = shown.drop(columns="threshold")
    text = shown.to_string(index=False)
    thr = df["threshold"].dropna()
    return text + (f"\nthreshold: {float(thr.iloc[0]):.4f}" if len(thr) else "")


def predict_main(argv: list[str] | None = None) -> int:
    """``fvc predict runs/<exp> a.mp4 b.webm``: P(fake) of a few files, printed as a table.

    Exit status 0 when every file was scored, 2 when some were excluded (their reason is in
    the table), 1 on an error (one line on stderr).
    """
    p = argparse.ArgumentParser(
        prog="fvc predict", description=predict_main.__doc__.splitlines()[0]
    )
    p.add_argument("run", help="the experiment folder, runs/<exp>")
    p.add_argument("videos", nargs="+", help="video files")
    p.add_argument(
        "--model",
        choices=MODEL_KINDS,
        default="ensemble",
        help="fold models averaged (default) or the refit final model",
    )
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--batch-size", type=int, default=default("train", "batch_size"))
    p.add_argument("--workers", type=int, default=1, help="decoder processes")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        df = predict_files(a.run, a.videos, a.model, a.device, a.batch_size, a.workers)
    except (PredictError, DataError) as exc:
        print(f"fvc predict: {exc}", file=sys.stderr)
        return 1
    print(f"fvc predict: scored with {df.attrs['scored_with']}", file=sys.stderr)
    print(format_table(df, df.attrs["class_names"]))
    return 2 if (df["reason"] != "").any() else 0


if __name__ == "__main__":
    sys.exit(predict_main())
