"""The config schema (``workflow/schemas/config.schema.yaml``) as the one source of defaults.

Snakemake validates the whole config against it at start-up. Code that runs without Snakemake
(``fvc train``, ``bench/gpu_check.py``, tests) takes its defaults and checks from the same file
through this module, with pyyaml only (no jsonschema: a stock PyTorch image has none).

Keys marked ``x-operational: true`` in the schema change how a job runs (workers, checkpoint
cadence, device, GC cadence), not what it computes: they are left out of the train rule's
``params`` (so changing one does not rerun a finished fold) and out of the checkpoint
fingerprint (so a running fold resumes instead of starting afresh).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import yaml

SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the key (one line)."""


@functools.cache
def _properties(section: str) -> dict[str, dict[str, Any]]:
    try:
        schema = yaml.safe_load(SCHEMA.read_text())
    except OSError as exc:
        raise ConfigError(f"{SCHEMA}: cannot read the config schema ({exc})") from exc
    return schema["properties"][section]["properties"]


def defaults(section: str) -> dict[str, Any]:
    """``{key: default}`` of a config section (keys without a default, e.g. deprecated, omitted)."""
    return {k: p["default"] for k, p in _properties(section).items() if "default" in p}


def operational_keys(section: str) -> frozenset[str]:
    """Keys of ``section`` marked ``x-operational: true``."""
    return frozenset(k for k, p in _properties(section).items() if p.get("x-operational"))


def check_section(section: str, given: dict[str, Any] | None) -> dict[str, Any]:
    """Defaults overlaid with ``given``, checked as the schema says (unknown key, enum, pattern,
    minimum, maximum); a violation is a :class:`ConfigError` naming ``section.key``."""
    props = _properties(section)
    unknown = sorted(set(given or {}) - set(props))
    if unknown:
        raise ConfigError(f"{section}: unknown key(s) {', '.join(unknown)}")
    cfg = {**defaults(section), **(given or {})}
    for key, value in cfg.items():
        p, name = props[key], f"{section}.{key}"
        if "enum" in p and value not in p["enum"]:
            raise ConfigError(f"{name}: {value!r} is not one of {tuple(p['enum'])}")
        if "pattern" in p and not (isinstance(value, str) and re.match(p["pattern"], value)):
            raise ConfigError(f"{name}: {value!r} does not match {p['pattern']}")
        if isinstance(value, int | float) and not isinstance(value, bool):
            if "minimum" in p and value < p["minimum"]:
                raise ConfigError(f"{name}: {value} must be >= {p['minimum']}")
            if "maximum" in p and value > p["maximum"]:
                raise ConfigError(f"{name}: {value} must be <= {p['maximum']}")
    return cfg
