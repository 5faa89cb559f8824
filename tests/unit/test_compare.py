"""Corrected resampled t-test and the variant comparison table, against hand-computed values."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from fvc.compare import (
    COMPARISON_COLUMNS,
    compare_variants,
    corrected_ttest,
    overlap_ratio,
    read_fold_metrics,
    write_comparison,
)

# t quantiles from a printed t table: t_{0.975, 3} and t_{0.975, 5}.
T975_DF3 = 3.182446
T975_DF5 = 2.570582


def test_nadeau_bengio_by_hand() -> None:
    # 4-fold CV (n2/n1 = 1/3): d = 0.1, 0.2, 0.3, 0.2 -> mean 0.2, var (ddof=1) = 0.02/3.
    res = corrected_ttest([0.1, 0.2, 0.3, 0.2], test_train_ratio=1 / 3)
    se = math.sqrt((1 / 4 + 1 / 3) * 0.02 / 3)  # = 0.0623610
    assert res.n == 4 and res.df == 3
    assert res.diff == pytest.approx(0.2)
    assert res.t_stat == pytest.approx(0.2 / se) and res.t_stat == pytest.approx(3.207135, abs=1e-5)
    assert res.p_value == pytest.approx(0.049063, abs=1e-5)  # just below the 3.182 critical value
    assert res.ci_low == pytest.approx(0.2 - T975_DF3 * se, abs=1e-5)
    assert res.ci_high == pytest.approx(0.2 + T975_DF3 * se, abs=1e-5)
    # The uncorrected paired t-test would be far more confident (t = 4.90).
    assert 0.2 / math.sqrt(0.02 / 3 / 4) == pytest.approx(4.898979, abs=1e-5)


def test_bouckaert_frank_repeated_by_hand() -> None:
    # 2-fold x 3 repeats (n2/n1 = 1): J = 6, df = 5, var factor 1/6 + 1.
    d = [-0.3, -0.1, -0.2, -0.4, -0.2, -0.3]  # mean -0.25, var (ddof=1) 0.011
    res = corrected_ttest(d, test_train_ratio=1.0)
    se = math.sqrt((1 / 6 + 1) * 0.011)  # = 0.1132843
    assert res.df == 5 and res.n == 6
    assert res.diff == pytest.approx(-0.25)
    assert res.t_stat == pytest.approx(-0.25 / se)
    assert res.t_stat == pytest.approx(-2.206837, abs=1e-5)
    assert res.p_value == pytest.approx(0.078416, abs=1e-5)
    assert (res.ci_low, res.ci_high) == pytest.approx(
        (-0.25 - T975_DF5 * se, -0.25 + T975_DF5 * se), abs=1e-5
    )
    assert res.ci_low < 0 < res.ci_high  # not significant: the interval covers 0


def test_all_zero_difference_is_diff_zero_p_one() -> None:
    res = corrected_ttest([0.0] * 6, test_train_ratio=1.0)
    assert (res.diff, res.ci_low, res.ci_high, res.t_stat, res.p_value) == (0, 0, 0, 0, 1.0)


def test_constant_nonzero_difference_is_certain() -> None:
    res = corrected_ttest([-0.5] * 4, test_train_ratio=1 / 3)
    assert res.diff == -0.5 and res.ci_low == res.ci_high == -0.5
    assert res.p_value == 0.0 and res.t_stat == -math.inf


def test_nan_folds_are_dropped_and_too_few_give_nan() -> None:
    res = corrected_ttest([0.1, math.nan, 0.3, 0.2, 0.2], test_train_ratio=1 / 3)
    assert res.n == 4 and res.p_value == pytest.approx(0.049063, abs=1e-5)
    one = corrected_ttest([0.1, math.nan], test_train_ratio=1.0)
    assert one.n == 1 and math.isnan(one.p_value)
    with pytest.raises(ValueError, match="test_train_ratio"):
        corrected_ttest([0.1, 0.2], test_train_ratio=-1)


def _per_fold() -> pd.DataFrame:
    rows = []
    base = [0.9, 0.8, 1.0, 0.9]
    worse = [0.5, 0.6, 0.7, 0.6]  # d = -0.4, -0.2, -0.3, -0.3
    for variant, values in (("base", base), ("worse", worse), ("same", base)):
        for i, v in enumerate(values):
            rows.append(
                {
                    "variant": variant,
                    "repeat": i // 2,
                    "fold": i % 2,
                    "roc_auc": v,
                    "val_loss": 1 - v,
                }
            )
    return pd.DataFrame(rows)


def test_compare_variants_table() -> None:
    table = compare_variants(_per_fold(), test_train_ratio=1.0)
    assert list(table.columns) == COMPARISON_COLUMNS
    assert len(table) == 3 * 2  # variants x metrics present
    t = table.set_index(["variant", "metric"])
    base = t.loc[("base", "roc_auc")]
    assert base["mean"] == pytest.approx(0.9) and base["diff"] == 0 and math.isnan(base["p_value"])
    assert base["std"] == pytest.approx(math.sqrt(0.02 / 3))
    same = t.loc[("same", "roc_auc")]
    assert same["diff"] == 0 and same["p_value"] == 1.0 and same["ci_low"] == same["ci_high"] == 0
    worse = t.loc[("worse", "roc_auc")]
    se = math.sqrt((1 / 4 + 1.0) * 0.02 / 3)
    assert worse["diff"] == pytest.approx(-0.3)
    assert worse["t_stat"] == pytest.approx(-0.3 / se)
    assert worse["df"] == 3 and worse["n_folds"] == 4
    # Best: highest AUC (base and same tie), lowest loss (again base and same).
    assert set(table.loc[table["best"], "variant"]) == {"base", "same"}
    loss = t.loc[("worse", "val_loss")]
    assert loss["diff"] == pytest.approx(0.3) and not loss["higher_is_better"]


def test_compare_requires_baseline_and_unique_folds() -> None:
    df = _per_fold()
    with pytest.raises(ValueError, match="baseline variant 'base'"):
        compare_variants(df[df["variant"] != "base"], 1.0)
    with pytest.raises(ValueError, match="more than once"):
        compare_variants(pd.concat([df, df.iloc[:1]]), 1.0)


def test_overlap_ratio() -> None:
    assert overlap_ratio(pd.DataFrame({"n_val": [10, 12], "n_train": [30, 34]}), 4) == 11 / 32
    assert overlap_ratio(pd.DataFrame({"roc_auc": [0.5]}), 5) == 0.25


def test_write_comparison_from_metrics_files(tmp_path) -> None:
    paths = []
    df = _per_fold()
    for row in df.itertuples():
        p = tmp_path / f"{row.variant}_{row.repeat}_{row.fold}.json"
        p.write_text(json.dumps({"fold": row.fold, "roc_auc": row.roc_auc, "n_val": 6}))
        paths.append(p)
    ids = [(0, 0), (0, 1), (1, 0), (1, 1)]
    table = write_comparison(
        ["base", "worse", "same"], ids, paths, tmp_path / "c.tsv", tmp_path / "c.png", 2
    )
    back = pd.read_csv(tmp_path / "c.tsv", sep="\t")
    assert list(back.columns) == COMPARISON_COLUMNS
    assert back.loc[back["variant"] == "same", "p_value"].item() == 1.0
    # n2/n1 falls back to 1/(k-1) = 1 without n_train: t = -0.3 / sqrt(1.25 * 0.02/3) = -3.286.
    worse = table[(table["variant"] == "worse") & (table["metric"] == "roc_auc")]
    assert worse["p_value"].item() == pytest.approx(0.046205, abs=1e-5)
    assert (tmp_path / "c.png").stat().st_size > 0
    assert not list(tmp_path.glob("*.tmp"))
    with pytest.raises(ValueError, match="expected fold 1"):
        read_fold_metrics(["base"], [(0, 1)], [paths[0]])
    with pytest.raises(ValueError, match="expected 4 metrics files"):
        read_fold_metrics(["base", "worse"], ids, paths[:4])


def test_only_folds_with_the_baselines_validation_sets_are_paired(tmp_path, caplog) -> None:
    """A variant that validated on other videos (another usable set: other folds) gets its
    means and no test, marked in `pairing` and the log; one with the same sets is tested."""
    df = _per_fold()
    sets = {(r, k): f"set{r}{k}" for r in (0, 1) for k in (0, 1)}
    df["val_set"] = [sets[(r, k)] for r, k in zip(df["repeat"], df["fold"], strict=True)]
    moved = (df["variant"] == "worse") & (df["fold"] == 1)
    df.loc[moved, "val_set"] = "other"
    table = compare_variants(df, test_train_ratio=1.0).set_index(["variant", "metric"])
    worse, same = table.loc[("worse", "roc_auc")], table.loc[("same", "roc_auc")]
    assert worse["pairing"].startswith("unpaired: 2 of 4 (repeat, fold) validation sets differ")
    assert math.isnan(worse["p_value"]) and math.isnan(worse["ci_low"])
    assert worse["diff"] == pytest.approx(0.6 - 0.9)  # difference of the means
    assert same["pairing"] == "paired" and same["p_value"] == 1.0
    assert table.loc[("base", "roc_auc"), "pairing"] == "paired"
    # metrics.json without val_set (written before it was recorded): from the predictions
    paths, preds = [], []
    for row in df.itertuples():
        stem = tmp_path / f"{row.variant}_{row.repeat}_{row.fold}"
        paths.append(stem.with_suffix(".json"))
        paths[-1].write_text(json.dumps({"fold": row.fold, "roc_auc": row.roc_auc}))
        preds.append(stem.with_suffix(".parquet"))
        ids = ["v1", "v2"] if row.val_set != "other" else ["v1", "v3"]
        pd.DataFrame({"video_id": [f"{i}_{row.repeat}{row.fold}" for i in ids]}).to_parquet(
            preds[-1]
        )
    ids = [(0, 0), (0, 1), (1, 0), (1, 1)]
    with caplog.at_level("WARNING", logger="fvc.compare"):
        out = write_comparison(
            ["base", "worse", "same"],
            ids,
            paths,
            tmp_path / "c.tsv",
            tmp_path / "c.png",
            2,
            predictions_paths=preds,
        )
    rows = out.set_index(["variant", "metric"])
    assert rows.loc[("worse", "roc_auc"), "pairing"].startswith("unpaired: 2 of 4")
    assert rows.loc[("same", "roc_auc"), "pairing"] == "paired"
    assert "worse: unpaired: 2 of 4" in caplog.text and "same:" not in caplog.text
