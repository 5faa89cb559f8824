"""fvc.config: the schema is the one home of every default, name list and description.

- every section's typed view is built from the schema's defaults (and checks like it);
- no module of the package writes a schema key's default again (`.get("key", literal)`, a
  parameter named like a key with a literal default);
- the metric name lists agree with each other and with the schema's enums;
- config/README.md is the schema, rendered.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
import yaml

import fvc
from fvc import config, metrics
from fvc.compare import COMPARED_METRICS
from fvc.train.publish import HISTORY_COLUMNS, HISTORY_METRICS

PACKAGE = Path(fvc.__file__).parent
REPO = PACKAGE.parents[1]
VIEWS = {
    "data": config.DataConfig,
    "data.demo": config.DemoConfig,
    "cv": config.CVConfig,
    "augment": config.AugmentConfig,
    "model": config.ModelConfig,
    "train": config.TrainConfig,
    "memory": config.MemoryConfig,
    "predict": config.PredictConfig,
}


def schema_keys() -> dict[str, set[str]]:
    """Every key of every section (and nested section), by section path."""
    out = {}
    for path in VIEWS:
        out[path] = set(config._properties(path))
    return out


@pytest.mark.parametrize("path", VIEWS)
def test_every_section_view_is_the_schema_defaults(path: str) -> None:
    view = VIEWS[path]
    built = dataclasses.asdict(view.of(None))
    expected = config.defaults(path)
    if path == "data":
        expected["demo"] = config.defaults("data.demo")
    assert built == expected
    assert {f.name for f in dataclasses.fields(view)} == set(config.defaults(path))


def test_views_check_like_the_schema() -> None:
    with pytest.raises(config.ConfigError, match=r"^train: unknown key\(s\) epoch_count$"):
        config.TrainConfig.of({"epoch_count": 3})
    with pytest.raises(config.ConfigError, match=r"^cv.n_splits: 1 must be >= 2$"):
        config.CVConfig.of({"n_splits": 1})
    with pytest.raises(config.ConfigError, match=r"^data.demo.size: 8 must be >= 16$"):
        config.DataConfig.of({"demo": {"size": 8}})
    with pytest.raises(config.ConfigError, match=r"^memory.gc_freeze: 'yes' is not of type"):
        config.MemoryConfig.of({"gc_freeze": "yes"})
    with pytest.raises(config.ConfigError, match=r"^model.dropout: 2 must be <= 1$"):
        config.ModelConfig(dropout=2)
    # the load stage's view carries cv.group_column; only keys named as extra may ride along
    assert config.DataConfig.of({"group_column": None}, extra=["group_column"]).size == 64
    assert config.TrainConfig.of({"use_amp": True}).precision == "auto"  # deprecated key


def schema_defaults() -> dict[str, object]:
    """Default of every key name that exists in one section only (``seed`` and ``size`` are
    in several: a parameter called ``seed`` is not one of them in particular)."""
    by_name: dict[str, list] = {}
    for path in VIEWS:
        for key, value in config.defaults(path).items():
            if not isinstance(value, dict):
                by_name.setdefault(key, []).append(value)
    return {k: v[0] for k, v in by_name.items() if len(v) == 1}


def _literal_defaults(tree: ast.AST, keys: dict[str, object]) -> list[str]:
    """``.get("key", literal)`` and ``def f(key=literal)`` where the literal is that schema
    key's own default (written a second time)."""
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and len(node.args) == 2
            and isinstance(node.args[0], ast.Constant)
            and node.args[0].value in keys
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value == keys[node.args[0].value]
        ):
            found.append(
                f"line {node.lineno}: .get({node.args[0].value!r}, {node.args[1].value!r})"
            )
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            args = node.args.args + node.args.kwonlyargs
            defaults = [None] * (len(node.args.args) - len(node.args.defaults))
            defaults += node.args.defaults + node.args.kw_defaults
            for arg, default in zip(args, defaults, strict=True):
                if (
                    arg.arg in keys
                    and isinstance(default, ast.Constant)
                    and default.value == keys[arg.arg]
                    and default.value is not None
                ):
                    found.append(f"line {node.lineno}: {node.name}({arg.arg}={default.value!r})")
    return found


def test_no_module_writes_a_schema_default_again() -> None:
    keys = schema_defaults()
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        hits = _literal_defaults(ast.parse(path.read_text()), keys)
        if hits:
            offenders[str(path.relative_to(PACKAGE))] = hits
    assert offenders == {}


def test_the_literal_default_finder_finds_them() -> None:
    """Guard the guard: the finder sees both spellings of a repeated default."""
    code = "def f(cfg, batch_size=16):\n    return cfg.get('lr', 0.003)\n"
    assert len(_literal_defaults(ast.parse(code), {"batch_size": 16, "lr": 0.003})) == 2
    assert _literal_defaults(ast.parse(code), {"batch_size": 8, "lr": 0.1}) == []


def test_metric_lists_agree() -> None:
    props = config.schema()["properties"]
    selectable = props["train"]["properties"]["best_metric"]["enum"]
    # every metric train.best_metric can select is computed, has a direction and is in history
    assert set(selectable) - {"val_loss"} <= set(metrics.METRIC_NAMES)
    assert set(selectable) <= set(metrics.HIGHER_IS_BETTER)
    assert set(selectable) <= set(HISTORY_COLUMNS)
    assert set(HISTORY_METRICS) == set(selectable) - {"val_loss"}
    # every compared metric has a direction; the threshold methods are the schema's
    assert set(COMPARED_METRICS) <= set(metrics.HIGHER_IS_BETTER)
    assert set(metrics.METRIC_NAMES) <= set(COMPARED_METRICS)
    assert tuple(props["cv"]["properties"]["threshold"]["enum"]) == metrics.THRESHOLD_METHODS
    assert not metrics.HIGHER_IS_BETTER["val_loss"] and metrics.HIGHER_IS_BETTER["roc_auc"]


def test_config_readme_is_the_schema_rendered() -> None:
    readme = (REPO / "config" / "README.md").read_text()
    assert readme == config.markdown(), "regenerate: python -m fvc.config > config/README.md"
    for path, keys in schema_keys().items():
        for key in keys:
            assert f"`{path}.{key}`" in readme


def test_the_shipped_config_sets_only_schema_keys() -> None:
    shipped = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for section, values in shipped.items():
        if isinstance(values, dict) and section in VIEWS:
            VIEWS[section].of(values)  # raises on an unknown key or a bad value
    assert set(shipped) == set(config.schema()["properties"])


def test_the_workflow_validates_with_the_package_schema() -> None:
    link = REPO / "workflow" / "schemas" / "config.schema.yaml"
    assert link.resolve() == config.SCHEMA_PATH.resolve()
