"""The figures of the Snakemake report.

Each ``*_figure`` function builds a matplotlib figure from the workflow's artifacts and returns
it (tests read the drawn data back from it); :func:`save` writes it atomically as PNG. Figures
have a fixed size in inches at :data:`DPI`, so a PNG's pixel size is known in advance.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display on cluster nodes
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from fvc import io

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Paths = Sequence[str | os.PathLike[str]]

#: Resolution of every PNG (pixels = inches x DPI).
DPI = 100
#: Memory events marked on the timelines, with their marker and colour.
MEMORY_MARKERS = {
    "oom": ("x", "tab:red"),
    "eval_oom": ("x", "tab:pink"),
    "retry": ("o", "tab:orange"),
    "batch_size": ("v", "tab:purple"),
    "skip": ("s", "black"),
    # OOM inside the optimizer/scaler update: the attempt stopped, the rerun resumed
    "step_state_lost": ("X", "darkred"),
}


def save(fig: Figure, out_png: str | os.PathLike[str]) -> None:
    """Write ``fig`` as PNG through a temp file + rename, then free it."""
    with io.atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    plt.close(fig)


def _predictions(paths: Paths) -> list[tuple[int, pd.DataFrame]]:
    out = []
    for path in paths:
        df = pd.read_parquet(path, columns=["label", "prob_fake", "fold"])
        out.append((int(df["fold"].iloc[0]) if len(df) else -1, df))
    return out


def roc_figure(predictions_paths: Paths) -> Figure:
    """One out-of-fold ROC curve per fold (AUC in the legend) and the chance diagonal."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, ax = plt.subplots(figsize=(5, 5))
    for fold, df in _predictions(predictions_paths):
        if df["label"].nunique() < 2:
            continue
        fpr, tpr, _ = roc_curve(df["label"], df["prob_fake"])
        auc = roc_auc_score(df["label"], df["prob_fake"])
        ax.plot(fpr, tpr, label=f"fold {fold} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="false positive rate", ylabel="true positive rate")
    ax.set_title("Out-of-fold ROC")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def pr_figure(predictions_paths: Paths) -> Figure:
    """Precision-recall curve per fold (AP in the legend), the pooled curve and the base rate."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    folds = _predictions(predictions_paths)
    fig, ax = plt.subplots(figsize=(5, 5))
    for fold, df in folds:
        if df["label"].nunique() < 2:
            continue
        precision, recall, _ = precision_recall_curve(df["label"], df["prob_fake"])
        ap = average_precision_score(df["label"], df["prob_fake"])
        ax.plot(recall, precision, lw=1, label=f"fold {fold} (AP {ap:.3f})")
    pooled = pd.concat([df for _, df in folds], ignore_index=True)
    if pooled["label"].nunique() == 2:
        precision, recall, _ = precision_recall_curve(pooled["label"], pooled["prob_fake"])
        ap = average_precision_score(pooled["label"], pooled["prob_fake"])
        ax.plot(recall, precision, "k", lw=2, label=f"pooled (AP {ap:.3f})")
    base = float(pooled["label"].mean()) if len(pooled) else 0.0
    ax.axhline(base, color="grey", ls="--", lw=0.8, label=f"chance ({base:.2f})")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall (fake)", ylabel="precision (fake)")
    ax.set_title("Out-of-fold precision-recall")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return fig


def calibration_figure(predictions_paths: Paths, n_bins: int = 10) -> Figure:
    """Reliability diagram of the pooled out-of-fold P(fake): observed fake fraction per bin of
    predicted probability (marker area ~ clips in the bin), with a histogram underneath.
    """
    pooled = pd.concat([df for _, df in _predictions(predictions_paths)], ignore_index=True)
    y, p = pooled["label"].to_numpy(), pooled["prob_fake"].to_numpy()
    edges = np.linspace(0, 1, n_bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins)
    used = count > 0
    mean_p = np.bincount(which, weights=p, minlength=n_bins)[used] / count[used]
    frac = np.bincount(which, weights=y, minlength=n_bins)[used] / count[used]
    brier = float(np.mean((p - y) ** 2)) if len(y) else float("nan")
    fig, (ax, hist) = plt.subplots(
        2, 1, figsize=(5, 6), gridspec_kw={"height_ratios": [3, 1]}, sharex=True
    )
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfectly calibrated")
    ax.plot(mean_p, frac, "o-", color="tab:blue", label=f"pooled (Brier {brier:.3f})")
    ax.scatter(mean_p, frac, s=20 + 200 * count[used] / max(1, count.max()), alpha=0.3)
    ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="observed fraction fake")
    ax.set_title("Calibration (out-of-fold)")
    ax.legend(loc="upper left", fontsize=8)
    for label, color in ((0, "tab:green"), (1, "tab:red")):
        hist.hist(p[y == label], bins=edges, alpha=0.5, color=color, label=("real", "fake")[label])
    hist.set(xlim=(0, 1), xlabel="predicted P(fake)", ylabel="clips")
    hist.legend(fontsize=8)
    fig.tight_layout()
    return fig


def confusion_figure(summary_path: str | os.PathLike[str]) -> Figure:
    """The pooled out-of-fold confusion matrix at the threshold chosen by ``cv.threshold``."""
    summary = json.loads(Path(summary_path).read_text())
    pooled, thr = summary["pooled_out_of_fold"], summary["threshold"]
    cells = np.array([[pooled["tn"], pooled["fp"]], [pooled["fn"], pooled["tp"]]], dtype=int)
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(cells, cmap="Blues", vmin=0, vmax=max(1, int(cells.max())))
    for (i, j), n in np.ndenumerate(cells):
        share = n / max(1, cells[i].sum())
        color = "white" if n > cells.max() / 2 else "black"
        ax.text(j, i, f"{n}\n{share:.0%} of row", ha="center", va="center", color=color)
    ax.set_xticks([0, 1], ["real", "fake"])
    ax.set_yticks([0, 1], ["real", "fake"])
    ax.set(xlabel="predicted", ylabel="true")
    ax.set_title(f"Pooled, {thr['method']} threshold {thr['value']:.3f}", fontsize=10)
    fig.tight_layout()
    return fig


def training_curves_figure(history_paths: Paths) -> Figure:
    """Train/val loss and validation ROC-AUC per epoch, all folds overlaid."""
    fig, (ax_loss, ax_auc) = plt.subplots(1, 2, figsize=(10, 4))
    for k, path in enumerate(history_paths):
        h = pd.read_csv(path)
        line = ax_loss.plot(h["epoch"], h["train_loss"], label=f"fold {k} train")[0]
        ax_loss.plot(h["epoch"], h["val_loss"], "--", color=line.get_color(), label=f"fold {k} val")
        ax_auc.plot(h["epoch"], h["roc_auc"], color=line.get_color(), label=f"fold {k}")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="Loss")
    ax_auc.set(xlabel="epoch", ylabel="ROC-AUC", title="Validation ROC-AUC", ylim=(0, 1.02))
    ax_loss.legend(fontsize=7, ncol=2)
    ax_auc.legend(fontsize=7)
    fig.tight_layout()
    return fig


def read_memory_log(path: str | os.PathLike[str]) -> pd.DataFrame:
    """A memory.jsonl as a frame (one row per event; a torn line is skipped, like MemoryLog)."""
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=["event", "time", "rss_mb"])
    return df.sort_values("time", kind="stable").reset_index(drop=True)


def memory_figure(memory_paths: Paths) -> Figure:
    """One panel per fold: RSS (and its peak so far) and CUDA memory (MiB) against time since the
    fold's first event, one point per logged event, OOM/retry/halving/skip events marked,
    (re)starts as dashed lines.
    """
    n = max(1, len(memory_paths))
    fig, axes = plt.subplots(n, 1, figsize=(8, 2.2 * n + 0.6), squeeze=False)
    for ax, path in zip(axes[:, 0], memory_paths, strict=False):
        df = read_memory_log(path)
        fold = df["fold"].dropna().iloc[0] if "fold" in df and df["fold"].notna().any() else "?"
        t = df["time"].astype(float) - float(df["time"].min()) if len(df) else df["time"]
        ax.plot(t, df["rss_mb"], ".-", color="tab:blue", label="RSS")
        if "rss_peak_mb" in df and df["rss_peak_mb"].notna().any():
            ax.plot(t, df["rss_peak_mb"], ":", color="tab:blue", label="RSS peak")
        for col, style in (("cuda_allocated_mb", "-"), ("cuda_reserved_mb", ":")):
            if col in df and df[col].notna().any():
                ax.plot(t, df[col], style, color="tab:green", label=col.removesuffix("_mb"))
        for ev, (marker, color) in MEMORY_MARKERS.items():
            hit = df["event"] == ev
            if hit.any():
                ax.scatter(
                    t[hit], df.loc[hit, "rss_mb"], marker=marker, color=color, s=60, label=ev
                )
        for x in t[df["event"] == "stage_start"]:
            ax.axvline(x, color="grey", lw=0.6, ls="--")
        ax.set(ylabel="MiB", title=f"fold {fold}")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7, loc="lower right", ncol=3)
    axes[-1, 0].set_xlabel("seconds since the fold's first event (dashed: job start/resume)")
    fig.tight_layout()
    return fig


def read_benchmarks(paths: Paths, root: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """Snakemake ``benchmark:`` files as one table: job (path below ``root``, default: below
    the last folder named ``benchmarks``; no suffix), seconds, peak RSS (MiB; NaN where
    Snakemake measured none), CPU seconds.
    """
    rows = []
    for path in paths:
        b = pd.read_csv(path, sep="\t", na_values=["NA", "-"])
        if b.empty or "s" not in b:
            raise ValueError(f"{path}: not a Snakemake benchmark file (no 's' column)")
        job = str(Path(path).relative_to(root)) if root else _below_benchmarks(Path(path))
        rows.append(
            {
                "job": job.removesuffix(".tsv"),
                "seconds": float(b["s"].iloc[-1]),
                "max_rss_mb": float(b["max_rss"].iloc[-1]) if "max_rss" in b else np.nan,
                "cpu_seconds": float(b["cpu_time"].iloc[-1]) if "cpu_time" in b else np.nan,
            }
        )
    return pd.DataFrame(rows, columns=["job", "seconds", "max_rss_mb", "cpu_seconds"])


def _below_benchmarks(path: Path) -> str:
    parts = path.parts
    cut = max((i for i, part in enumerate(parts[:-1]) if part == "benchmarks"), default=-1)
    return "/".join(parts[cut + 1 :])


def benchmark_figure(table: pd.DataFrame) -> Figure:
    """Horizontal bars: each job's wall time and CPU time, and its peak RSS."""
    n = max(1, len(table))
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10, 0.35 * n + 1.5), sharey=True)
    y = np.arange(len(table))
    ax_t.barh(y - 0.2, table["seconds"], height=0.4, label="wall")
    ax_t.barh(y + 0.2, table["cpu_seconds"], height=0.4, label="CPU")
    ax_t.set_yticks(y, table["job"], fontsize=8)
    ax_t.invert_yaxis()
    ax_t.set(xlabel="seconds", title="Run time")
    ax_t.legend(fontsize=8)
    ax_m.barh(y, table["max_rss_mb"].fillna(0), color="tab:purple")
    ax_m.set(xlabel="MiB", title="Peak RSS")
    fig.tight_layout()
    return fig


def write_benchmarks(
    paths: Paths,
    out_png: str | os.PathLike[str],
    out_tsv: str | os.PathLike[str],
    root: str | os.PathLike[str] | None = None,
) -> pd.DataFrame:
    """The benchmark table (TSV) and its figure (PNG) for the report."""
    table = read_benchmarks(paths, root)
    io.write_tsv(out_tsv, table)
    save(benchmark_figure(table), out_png)
    return table


def predict_metrics_table(metrics_paths: dict[str, str | os.PathLike[str]]) -> pd.DataFrame:
    """One row per predict set from its ``<name>_metrics.json`` .

    The files are expected to hold the same keys as summary.json's ``pooled_out_of_fold``.
    """
    rows: list[dict[str, Any]] = []
    for name, path in metrics_paths.items():
        m = json.loads(Path(path).read_text())
        rows.append({"set": name, **{k: v for k, v in m.items() if not isinstance(v, dict)}})
    return pd.DataFrame(rows)


def write_report_plots(
    predictions_paths: Paths,
    history_paths: Paths,
    summary_path: str | os.PathLike[str],
    out: dict[str, str | os.PathLike[str]],
) -> None:
    """The figures that only need the fold outputs and summary.json (rule ``plots``); ``out``
    maps ``roc``, ``pr``, ``calibration``, ``confusion``, ``curves`` to PNG paths.
    """
    save(roc_figure(predictions_paths), out["roc"])
    save(pr_figure(predictions_paths), out["pr"])
    save(calibration_figure(predictions_paths), out["calibration"])
    save(confusion_figure(summary_path), out["confusion"])
    save(training_curves_figure(history_paths), out["curves"])
