"""fvc.plots: each figure draws the right data, and its PNG decodes to the expected size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import average_precision_score, roc_auc_score

from fvc import plots

N_FOLDS = 3


def assert_png(path: Path, inches: tuple[float, float]) -> np.ndarray:
    """The PNG decodes, has the figure's pixel size, and is not blank (a plot was drawn)."""
    with Image.open(path) as img:
        img.load()
        pixels = np.asarray(img.convert("RGB"))
    want = (round(inches[1] * plots.DPI), round(inches[0] * plots.DPI))
    assert pixels.shape[:2] == want, f"{path.name}: {pixels.shape[:2]} != {want}"
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(colours) > 20, f"{path.name} looks blank ({len(colours)} colours)"
    non_white = (pixels < 250).any(axis=2).mean()
    assert 0.02 < non_white < 0.9, f"{path.name}: {non_white:.1%} of the pixels are drawn"
    return pixels


def save_and_check(fig, path: Path) -> None:
    inches = tuple(fig.get_size_inches())
    plots.save(fig, path)
    assert_png(path, inches)


@pytest.fixture(scope="module")
def fold_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    d = tmp_path_factory.mktemp("plots")
    rng = np.random.default_rng(0)
    out: dict[str, list[Path]] = {"pred": [], "hist": [], "mem": []}
    for k in range(N_FOLDS):
        labels = np.array([0, 1] * 20)
        prob = np.clip(labels * 0.3 + rng.random(40) * 0.7, 0, 1)
        pred = pd.DataFrame({"label": labels, "prob_fake": prob, "fold": k})
        out["pred"].append(d / f"pred{k}.parquet")
        pred.to_parquet(out["pred"][-1])
        hist = pd.DataFrame(
            {
                "epoch": [1, 2, 3],
                "train_loss": [0.7, 0.5, 0.4],
                "val_loss": [0.7, 0.6, 0.55],
                "roc_auc": [0.6, 0.7, 0.8],
            }
        )
        out["hist"].append(d / f"hist{k}.csv")
        hist.to_csv(out["hist"][-1], index=False)
        events = [
            {"event": "stage_start", "time": 100.0, "fold": k, "rss_mb": 500.0},
            {"event": "oom", "time": 105.0, "fold": k, "rss_mb": 900.0, "epoch": 1, "batch": 3},
            {"event": "retry", "time": 105.5, "fold": k, "rss_mb": 700.0},
            {"event": "batch_size", "time": 106.0, "fold": k, "rss_mb": 650.0, "old": 16},
            {"event": "epoch_end", "time": 110.0, "fold": k, "rss_mb": 640.0, "epoch": 1},
            {"event": "stage_start", "time": 200.0, "fold": k, "rss_mb": 480.0},
            {
                "event": "fold_end",
                "time": 230.0,
                "fold": k,
                "rss_mb": 620.0 + k,
                "rss_peak_mb": 950,
            },
        ]
        out["mem"].append(d / f"memory{k}.jsonl")
        text = "".join(json.dumps(e) + "\n" for e in events) + '{"event": "torn'
        out["mem"][-1].write_text(text)
    return out


def _legend(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_roc_one_curve_per_fold_with_its_auc(fold_files, tmp_path) -> None:
    fig = plots.roc_figure(fold_files["pred"])
    ax = fig.axes[0]
    labels = _legend(ax)
    assert len(labels) == N_FOLDS
    for k, path in enumerate(fold_files["pred"]):
        df = pd.read_parquet(path)
        assert labels[k] == f"fold {k} (AUC {roc_auc_score(df['label'], df['prob_fake']):.3f})"
        x, y = ax.lines[k].get_data()
        assert (x[0], y[0], x[-1], y[-1]) == (0, 0, 1, 1)
    assert ax.get_xlim() == (0, 1)
    save_and_check(fig, tmp_path / "roc.png")


def test_pr_curves_per_fold_pooled_and_chance(fold_files, tmp_path) -> None:
    fig = plots.pr_figure(fold_files["pred"])
    ax = fig.axes[0]
    labels = _legend(ax)
    assert len(labels) == N_FOLDS + 2
    pooled = pd.concat([pd.read_parquet(p) for p in fold_files["pred"]])
    ap = average_precision_score(pooled["label"], pooled["prob_fake"])
    assert labels[N_FOLDS] == f"pooled (AP {ap:.3f})"
    assert labels[-1] == "chance (0.50)"
    for line in ax.lines[:-1]:
        recall, precision = line.get_data()
        assert recall.min() == 0 and recall.max() == 1
        assert precision.min() >= 0 and precision.max() <= 1
    assert ax.get_xlim() == (0, 1) and ax.get_ylim() == (0, 1.02)
    save_and_check(fig, tmp_path / "pr.png")


def test_calibration_points_are_bin_means(fold_files, tmp_path) -> None:
    fig = plots.calibration_figure(fold_files["pred"], n_bins=5)
    ax = fig.axes[0]
    pooled = pd.concat([pd.read_parquet(p) for p in fold_files["pred"]])
    x, y = ax.lines[1].get_data()
    bins = np.clip((pooled["prob_fake"] * 5).astype(int), 0, 4)
    want = pooled.groupby(bins).agg(p=("prob_fake", "mean"), y=("label", "mean"))
    assert np.allclose(x, want["p"]) and np.allclose(y, want["y"])
    brier = np.mean((pooled["prob_fake"] - pooled["label"]) ** 2)
    assert _legend(ax)[1] == f"pooled (Brier {brier:.3f})"
    assert ax.get_xlim() == (0, 1) and ax.get_ylim() == (0, 1)
    save_and_check(fig, tmp_path / "calibration.png")


def test_confusion_matrix_shows_the_summary_counts(tmp_path) -> None:
    summary = {
        "threshold": {"method": "eer", "value": 0.4321},
        "pooled_out_of_fold": {"tn": 50, "fp": 10, "fn": 7, "tp": 53},
    }
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(summary))
    fig = plots.confusion_figure(path)
    ax = fig.axes[0]
    texts = [t.get_text().split("\n")[0] for t in ax.texts]
    assert texts == ["50", "10", "7", "53"]
    assert ax.get_title() == "Pooled, eer threshold 0.432"
    save_and_check(fig, tmp_path / "confusion.png")


def test_training_curves_one_legend_entry_per_fold(fold_files, tmp_path) -> None:
    fig = plots.training_curves_figure(fold_files["hist"])
    loss, auc = fig.axes
    assert _legend(auc) == [f"fold {k}" for k in range(N_FOLDS)]
    assert len(_legend(loss)) == 2 * N_FOLDS
    assert list(auc.lines[0].get_xdata()) == [1, 2, 3]
    assert auc.get_ylim() == (0, 1.02)
    save_and_check(fig, tmp_path / "curves.png")


def test_memory_timeline_panel_per_fold_with_events_marked(fold_files, tmp_path) -> None:
    fig = plots.memory_figure(fold_files["mem"])
    assert len(fig.axes) == N_FOLDS
    for k, ax in enumerate(fig.axes):
        assert ax.get_title() == f"fold {k}"
        t, rss = ax.lines[0].get_data()
        assert list(t) == [0, 5, 5.5, 6, 10, 100, 130]  # the torn last line is skipped
        assert rss[-1] == 620 + k
        assert {"RSS", "RSS peak", "oom", "retry", "batch_size"} <= set(_legend(ax))
        marked = {c.get_label(): c.get_offsets().tolist() for c in ax.collections}
        assert marked["oom"] == [[5.0, 900.0]]
        # job starts (the fresh one and the resume) as vertical lines
        assert sum(1 for line in ax.lines if list(line.get_xdata()) in ([0, 0], [100, 100])) == 2
    save_and_check(fig, tmp_path / "memory.png")


def test_benchmarks_table_and_bars(tmp_path) -> None:
    root = tmp_path / "benchmarks"
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    rows = {"load_data": "1.5\t0:00:01\t120.5", "train/fold_0": "40.0\t0:00:40\t900.0"}
    paths = []
    for name, row in rows.items():
        path = root / f"{name}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(header + row + "\t1\t1\t1\t0\t0\t50\t30.5\n")
        paths.append(path)
    # Snakemake writes NA where a job was too short to measure.
    (root / "augment").mkdir()
    (root / "augment/fold_0.tsv").write_text(header + "0.2\t0:00:00" + "\tNA" * 7 + "\t0.1\n")
    paths.append(root / "augment/fold_0.tsv")
    table = plots.write_benchmarks(paths, tmp_path / "b.png", tmp_path / "b.tsv")
    assert list(table["job"]) == ["load_data", "train/fold_0", "augment/fold_0"]
    assert list(table["seconds"]) == [1.5, 40.0, 0.2]
    assert table["max_rss_mb"].iloc[1] == 900.0 and np.isnan(table["max_rss_mb"].iloc[2])
    assert pd.read_csv(tmp_path / "b.tsv", sep="\t")["cpu_seconds"].tolist() == [30.5, 30.5, 0.1]
    fig = plots.benchmark_figure(table)
    assert list(plots.read_benchmarks(paths[:1], root=tmp_path)["job"]) == ["benchmarks/load_data"]
    widths = [p.get_width() for p in fig.axes[0].patches]
    assert widths[:3] == [1.5, 40.0, 0.2]
    assert_png(tmp_path / "b.png", tuple(fig.get_size_inches()))
    bad = tmp_path / "bad.tsv"
    bad.write_text("x\ty\n1\t2\n")
    with pytest.raises(ValueError, match=r"bad.tsv: not a Snakemake benchmark file"):
        plots.read_benchmarks([bad])


def test_predict_metrics_table_one_row_per_set(tmp_path) -> None:
    paths = {}
    for name, auc in (("ffpp", 0.8), ("dfdc", 0.7)):
        paths[name] = tmp_path / f"{name}_metrics.json"
        paths[name].write_text(json.dumps({"roc_auc": auc, "tp": 3, "threshold": {"v": 1}}))
    table = plots.predict_metrics_table(paths)
    assert table.to_dict("records") == [
        {"set": "ffpp", "roc_auc": 0.8, "tp": 3},
        {"set": "dfdc", "roc_auc": 0.7, "tp": 3},
    ]
