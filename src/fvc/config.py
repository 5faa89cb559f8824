"""The configuration: its schema, one typed view per section, and which keys change results.

The schema (``config.schema.yaml``, package data next to this module, so an installed ``fvc``
finds it; ``workflow/schemas/`` links to it) is the only place a default or a bound is written.
Snakemake validates the whole config against it at start-up. Library code that runs without
Snakemake (``fvc train``, ``fvc predict``, ``bench/gpu_check.py``, tests) builds its section
views here, with pyyaml only (a stock PyTorch image has no jsonschema):

- one frozen dataclass per section (:class:`TrainConfig`, :class:`DataConfig`, ...) whose
  fields are declared here with their types and whose defaults are read from the schema when
  this module is imported (:func:`section`); a field the schema does not have, or a schema key
  without a field, fails the import;
- ``XConfig.of(value)`` turns a section mapping (as Snakemake passes it, possibly partial) into
  that view: defaults filled in, unknown keys and out-of-range values a :class:`ConfigError`
  naming ``section.key``.

Keys marked ``x-operational: true`` change how a job runs (workers, checkpoint cadence,
device, GC cadence), not what it computes: :func:`non_operational` leaves them out of the rule
params (changing one reruns nothing) and the checkpoint fingerprint (a running fold resumes).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml

log = logging.getLogger(__name__)

#: The schema file (package data); Snakemake's ``validate`` reads it by path.
SCHEMA_PATH = Path(str(resources.files("fvc").joinpath("config.schema.yaml")))

#: Top-level sections with a typed view (``experiment`` and ``sweep`` are plain values).
SECTIONS = ("data", "cv", "augment", "model", "train", "memory", "predict")


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the key (one line)."""


@functools.cache
def schema() -> dict[str, Any]:
    """The parsed schema (read once per process)."""
    try:
        return yaml.safe_load(SCHEMA_PATH.read_text())
    except OSError as exc:
        raise ConfigError(f"{SCHEMA_PATH}: cannot read the config schema ({exc})") from exc


def _properties(path: str) -> dict[str, dict[str, Any]]:
    """Properties of the object at ``path`` (``train``, ``data.demo``)."""
    node = schema()
    for part in path.split("."):
        node = node["properties"][part]
    return node["properties"]


def defaults(path: str) -> dict[str, Any]:
    """``{key: default}`` of a section (keys without a default, e.g. deprecated, omitted)."""
    return {k: p["default"] for k, p in _properties(path).items() if "default" in p}


def default(path: str, key: str) -> Any:
    """The schema default of one key, e.g. ``default("cv", "group_column")``."""
    return _properties(path)[key]["default"]


def group_column(load_view: Mapping[str, Any]) -> str | None:
    """``cv.group_column`` as the load stage's data view carries it (the schema default when
    absent): the metadata column whose value becomes each video's group."""
    return load_view.get("group_column", default("cv", "group_column"))


def operational_keys(section: str) -> frozenset[str]:
    """Keys of ``section`` marked ``x-operational: true``."""
    return frozenset(k for k, p in _properties(section).items() if p.get("x-operational"))


def non_operational(section: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` (a ``section`` mapping) without its x-operational keys: what changes results."""
    ops = operational_keys(section)
    return {k: v for k, v in values.items() if k not in ops}


def without_operational(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A whole config with the operational keys of ``train`` and ``memory`` left out (what a
    sweep variant's stage keys hash: a variant differing only in them shares the base's folds)."""
    return {**cfg, **{s: non_operational(s, cfg[s]) for s in ("train", "memory")}}


_TYPES: dict[str, Callable[[Any], bool]] = {
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "object": lambda v: isinstance(v, Mapping),
}


def _check_value(name: str, value: Any, p: dict[str, Any]) -> None:
    kinds = p.get("type")
    kinds = [kinds] if isinstance(kinds, str) else kinds or []
    if kinds and not any(_TYPES[k](value) for k in kinds if k in _TYPES):
        raise ConfigError(f"{name}: {value!r} is not of type {' or '.join(kinds)}")
    if "enum" in p and value not in p["enum"]:
        raise ConfigError(f"{name}: {value!r} is not one of {tuple(p['enum'])}")
    if "pattern" in p and not (isinstance(value, str) and re.match(p["pattern"], value)):
        raise ConfigError(f"{name}: {value!r} does not match {p['pattern']}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in p and value < p["minimum"]:
            raise ConfigError(f"{name}: {value} must be >= {p['minimum']}")
        if "maximum" in p and value > p["maximum"]:
            raise ConfigError(f"{name}: {value} must be <= {p['maximum']}")


def check_section(path: str, given: Mapping[str, Any] | None) -> dict[str, Any]:
    """Defaults overlaid with ``given``, checked as the schema says (unknown key, type, enum,
    pattern, bounds); a violation is a :class:`ConfigError` naming ``path.key``. Nested objects
    (``data.demo``) are checked the same way, one level down."""
    props = _properties(path)
    unknown = sorted(set(given or {}) - set(props))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}")
    cfg = {**defaults(path), **(given or {})}
    for key, value in cfg.items():
        p = props[key]
        if p.get("type") == "object" and "properties" in p:
            cfg[key] = check_section(f"{path}.{key}", value)
        else:
            _check_value(f"{path}.{key}", value, p)
    return cfg


S = TypeVar("S", bound="Section")


class Section:
    """Base of the section views: ``of()`` builds one from a mapping, ``as_dict()`` goes back."""

    PATH: ClassVar[str]  # the schema path of the section, e.g. "train" or "data.demo"
    NESTED: ClassVar[dict[str, type[Section]]] = {}

    @classmethod
    def of(cls: type[S], value: S | Mapping[str, Any] | None, *, extra: Iterable[str] = ()) -> S:
        """The view of ``value`` (returned as is when it already is one): schema defaults for
        missing keys, every value checked. ``extra`` names keys that may be present without
        belonging to the section (callers read them themselves, e.g. ``group_column`` in the
        load stage's data view)."""
        if isinstance(value, cls):
            return value
        given = {k: v for k, v in (value or {}).items() if k not in set(extra)}
        values = check_section(cls.PATH, given)
        for key, sub in cls.NESTED.items():
            values[key] = sub.of(values[key])
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        """Plain mapping (nested sections too), as the config file would hold it."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def __post_init__(self) -> None:
        # direct construction (TrainConfig(epochs=2)) is checked like of()
        values = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
            if f.name not in self.NESTED
        }
        check_section(self.PATH, values)


def section(path: str, nested: Mapping[str, type[Section]] | None = None) -> Callable[[type], Any]:
    """Class decorator: a frozen dataclass over the annotated fields, defaults from the schema.

    The annotations must name exactly the schema's keys that have a default (a deprecated key
    without one, ``train.use_amp``, is translated by the section's ``of``): a key added to the
    schema without a field, or a field the schema lacks, fails at import time.
    """

    def wrap(cls: type) -> Any:
        schema_keys = set(defaults(path))
        fields = set(cls.__annotations__) - {"PATH", "NESTED"}
        if fields != schema_keys:
            raise ConfigError(
                f"{cls.__name__}: fields {sorted(fields - schema_keys)} are not in the schema's "
                f"{path}, schema keys {sorted(schema_keys - fields)} have no field"
            )
        for key, value in defaults(path).items():
            if key in (nested or {}):
                factory = nested[key]  # type: ignore[index]
                setattr(cls, key, dataclasses.field(default_factory=factory))
            elif isinstance(value, dict | list):
                setattr(cls, key, dataclasses.field(default_factory=lambda v=value: type(v)(v)))
            else:
                setattr(cls, key, value)
        cls.PATH = path
        cls.NESTED = dict(nested or {})
        return dataclasses.dataclass(frozen=True)(cls)

    return wrap


@section("data.demo")
class DemoConfig(Section):
    """``data.demo``: the generated demo dataset."""

    sources: int
    clips_per_source: int
    frames: int
    size: int
    seed: int
    subtle_share: float


@section("data", nested={"demo": DemoConfig})
class DataConfig(Section):
    """``data``: where the videos are and how clips are decoded."""

    metadata: str | None
    root: str | None
    format: str
    fvc_filename: str
    positive_label: str
    num_frames: int
    clips_per_video: int
    frame_stride: int | None
    size: int
    short_videos: str
    resize: str
    workers: int
    demo: DemoConfig


@section("cv")
class CVConfig(Section):
    """``cv``: folds, their groups, the pooled threshold and its confidence intervals."""

    n_splits: int
    seed: int
    group_column: str | None
    threshold: str
    bootstrap_samples: int
    n_repeats: int
    outer_splits: int
    select_metric: str | None


@section("augment")
class AugmentConfig(Section):
    """``augment``: offline augmented copies of each fold's training videos."""

    copies: int
    seed: int
    p_flip: float
    p_affine: float
    p_color: float
    p_blur: float
    p_noise: float
    p_erase: float
    p_temporal: float

    def prob(self, op: str) -> float:
        """Probability of augmentation ``op`` (``flip``, ``affine``, ..., ``temporal``)."""
        return float(getattr(self, f"p_{op}"))


@section("model")
class ModelConfig(Section):
    """``model``: architecture, pretrained weights, dropout."""

    name: str
    weights: str | None
    dropout: float


@section("train")
class TrainConfig(Section):
    """``train``: the training loop of each fold."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    scheduler: str
    patience: int
    best_metric: str
    precision: str
    device: str
    num_workers: int
    class_weights: str
    sampler: str
    seed: int
    checkpoint_every_n_batches: int
    checkpoint_every_s: float
    keep_epoch_checkpoints: int
    time_margin_s: float
    backbone_lr_scale: float
    freeze_backbone_epochs: int
    warmup_epochs: int

    @classmethod
    def of(cls, value: Any, *, extra: Iterable[str] = ()) -> TrainConfig:
        """As :meth:`Section.of`; the deprecated ``use_amp: true`` reads as ``precision: auto``
        (unless a precision is set), with a warning naming the new key."""
        if isinstance(value, cls):
            return value
        given = dict(value or {})
        if "use_amp" in given:
            use_amp = given.pop("use_amp")
            precision = given.get("precision", default("train", "precision"))
            if use_amp and precision == "off":
                given["precision"] = precision = "auto"
            log.warning(
                "train.use_amp is deprecated: set train.precision (off, bf16, fp16 or auto); "
                "use_amp: %s read as precision: %s",
                use_amp,
                precision,
            )
        return super().of(given, extra=extra)

    def result_dict(self) -> dict[str, Any]:
        """The keys that change what training computes (no x-operational ones)."""
        return non_operational("train", self.as_dict())


@section("memory")
class MemoryConfig(Section):
    """``memory``: garbage-collection cadence and out-of-memory recovery."""

    gc_every_n_batches: int
    empty_cache_every_n_batches: int
    gc_freeze: bool
    max_oom_retries: int
    min_batch_size: int
    max_skip_fraction: float


@section("predict")
class PredictConfig(Section):
    """``predict``: sets of new videos to score and which model scores them."""

    sets: dict[str, Any]
    model: str


# ----------------------------------------------------------------------------- config/README.md


def _markdown_value(value: Any) -> str:
    return f"`{yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}`"


def _markdown_table(path: str) -> list[str]:
    rows = ["| key | default | what it does |", "|---|---|---|"]
    for key, p in _properties(path).items():
        if p.get("type") == "object" and "properties" in p:
            continue  # a nested section gets its own table
        default_ = _markdown_value(p["default"]) if "default" in p else "(none)"
        text = " ".join(str(p.get("description", "")).split())
        if p.get("x-operational"):
            text += " *Operational: changing it reruns nothing.*"
        if p.get("deprecated"):
            text = "**Deprecated.** " + text
        rows.append(f"| `{path}.{key}` | {default_} | {text.replace('|', '/')} |")
    return rows


def markdown() -> str:
    """config/README.md: every config group and key, from the schema (a test keeps the file in
    step; regenerate it with ``python -m fvc.config > config/README.md``)."""
    props = schema()["properties"]
    out = [
        "# Configuration",
        "",
        "`config/config.yaml` configures one experiment; every key below has a default, so an",
        "overlay (`snakemake --configfile my.yaml`) or a module's `config:` only names what",
        "differs. Snakemake validates the config against the schema",
        "(`src/fvc/config.schema.yaml`, linked from `workflow/schemas/`) before anything runs: a",
        "wrong key or type fails with the key named. Cluster resources (partition, GPUs, memory,",
        "time limits) are not configured here but in a profile (`profiles/slurm/`).",
        "",
        "This file is generated from the schema (`python -m fvc.config > config/README.md`);",
        "`tests/unit/test_config.py` fails when the two disagree.",
        "",
    ]
    for name, p in props.items():
        out += [f"## `{name}`", "", " ".join(str(p.get("description", "")).split()), ""]
        if p.get("type") == "object" and "properties" in p:
            out += [*_markdown_table(name), ""]
            for key, sub in p["properties"].items():
                if sub.get("type") == "object" and "properties" in sub:
                    out += [f"### `{name}.{key}`", "", " ".join(sub["description"].split()), ""]
                    out += [*_markdown_table(f"{name}.{key}"), ""]
        elif "default" in p:
            out += [f"Default: {_markdown_value(p['default'])}.", ""]
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
