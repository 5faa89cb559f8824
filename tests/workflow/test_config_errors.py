"""Config mistakes through real Snakemake: the schema names the key, groups come from one key.

Every case is a real ``snakemake`` call with an overlay file merged over config/config.yaml.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.workflow.helpers import make_project, snakemake

pytestmark = [pytest.mark.workflow, pytest.mark.timeout(600, func_only=True)]

RUN = Path("runs/tiny")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(tmp_path_factory.mktemp("cfg") / "proj")


def _dry_run_error(project: Path, name: str, overlay: dict) -> str:
    (project / name).write_text(yaml.safe_dump(overlay))
    proc = snakemake(project, "-n", overlays=(name,), check=False)
    assert proc.returncode != 0, proc.stdout[-2000:]
    return proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("overlay", "expect"),
    [
        # a typo in a key: the unexpected key and the section it is in
        ({"train": {"epoch": 3}}, ["'epoch' was unexpected", "['properties']['train']"]),
        # a string where a number belongs (e.g. quoted in YAML)
        (
            {"cv": {"n_splits": "4"}},
            ["'4' is not of type 'integer'", "['cv']['properties']['n_splits']"],
        ),
        (
            {"train": {"scheduler": "linear"}},
            ["'linear' is not one of", "['train']['properties']['scheduler']"],
        ),
        ({"train": {"seed": -1}}, ["-1 is less than the minimum of 0", "['seed']"]),
    ],
    ids=["wrong_key", "wrong_type", "unknown_scheduler", "negative_seed"],
)
def test_schema_rejects_the_config_naming_the_key(
    project: Path, overlay: dict, expect: list[str]
) -> None:
    text = _dry_run_error(project, "bad.yaml", overlay)
    assert "Error validating config file" in text, text[-3000:]
    for part in expect:
        assert part in text, text[-3000:]


def test_old_data_group_column_spelling_says_what_to_write(project: Path) -> None:
    text = _dry_run_error(project, "old.yaml", {"data": {"group_column": "cascade_id"}})
    assert "replace `data.group_column: cascade_id` by `cv.group_column: cascade_id`" in text, text[
        -3000:
    ]


@pytest.fixture(scope="module")
def cascade_table(project: Path) -> pd.DataFrame:
    """The demo videos listed in a `cascade_id,path,label` table (an FVC-style group column)."""
    snakemake(project, "runs/demo_data/metadata.csv")
    demo = pd.read_csv(project / "runs/demo_data/metadata.csv")
    codes = {g: f"c{i:03d}" for i, g in enumerate(sorted(demo["group"].unique()))}
    table = pd.DataFrame(
        {"cascade_id": demo["group"].map(codes), "path": demo["path"], "label": demo["label"]}
    )
    table.to_csv(project / "runs/demo_data/cascades.csv", index=False)
    return table


def test_cv_group_column_names_the_metadata_column(
    project: Path, cascade_table: pd.DataFrame
) -> None:
    """`cv.group_column: cascade_id` alone groups by that column: no source in two folds."""
    overlay = {
        "experiment": "cascades",
        "data": {"metadata": "runs/demo_data/cascades.csv"},
        "cv": {"group_column": "cascade_id"},
    }
    (project / "cascades.yaml").write_text(yaml.safe_dump(overlay))
    snakemake(project, "runs/cascades/splits.parquet", overlays=("cascades.yaml",))
    splits = pd.read_parquet(project / "runs/cascades/splits.parquet")
    assert len(splits) == len(cascade_table)
    by_path = dict(zip(cascade_table["path"], cascade_table["cascade_id"], strict=True))
    root = project / "runs/demo_data"
    want = [by_path[str(Path(p).relative_to(root))] for p in splits["path"]]
    assert splits["group"].tolist() == want  # each video's group is its cascade_id
    assert (splits.groupby("group")["fold"].nunique() == 1).all()
    summary = pd.read_csv(project / "runs/cascades/splits_summary.tsv", sep="\t")
    assert summary["n_groups"].sum() == cascade_table["cascade_id"].nunique()


def test_cv_group_column_that_is_not_a_column_is_named(
    project: Path, cascade_table: pd.DataFrame
) -> None:
    overlay = {
        "experiment": "no_source",
        "data": {"metadata": "runs/demo_data/cascades.csv"},
        "cv": {"group_column": "source"},
    }
    (project / "no_source.yaml").write_text(yaml.safe_dump(overlay))
    target = "runs/no_source/data/metadata.parquet"
    proc = snakemake(project, target, overlays=("no_source.yaml",), check=False)
    assert proc.returncode != 0
    log = (project / "runs/no_source/logs/load_data.log").read_text()
    assert "cv.group_column='source' is not a column of the metadata" in log, log
    assert "cascade_id" in log.split("cv.group_column='source'", 1)[1], log  # columns listed
    assert not (project / target).exists()
