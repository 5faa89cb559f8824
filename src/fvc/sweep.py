"""Sweep variants: resolved configs and the keys that decide which stages they can share.

The config itself is the baseline variant ``base``; ``sweep: {name: overlay}`` adds variants,
each a partial overlay of the ``model``, ``train``, ``augment`` and ``data`` sections merged
over the base config. A stage's artifacts are keyed by a hash of exactly the config its output
depends on (chained through the stages before it), so two variants that only differ in
``train.lr`` get equal load, decode and augment keys and Snakemake runs those jobs once.

The workflow imports this module while it parses: it needs the standard library and
:mod:`fvc.config` (pyyaml) only, never torch.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from fvc.config import default

#: Name of the baseline variant (the config without any overlay).
BASE = "base"
#: Config sections a variant may overlay.
OVERLAY_SECTIONS = ("model", "train", "augment", "data")
#: Keys a variant may not overlay, and why: they are shared by every variant of a run.
FIXED_KEYS = {
    ("data", "demo"): "the generated demo dataset is shared by all variants",
    ("data", "workers"): "decoder processes are an operational setting of the whole run",
}
#: The data keys that decide which videos are usable (load_data); cv.group_column joins them.
LOAD_KEYS = ("metadata", "root", "format", "fvc_filename", "positive_label")
#: The data keys that decide the decoded clips (preprocess).
DECODE_KEYS = ("num_frames", "size", "short_videos", "resize")
#: Stages with keyed, shared artifacts, upstream first; "train" keys the trained folds.
STAGES = ("load", "decode", "augment", "train")
_KEY_LEN = 10


class SweepError(ValueError):
    """A sweep section that cannot be resolved (the message names the variant and key)."""


def merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """Deep copy of ``base`` with ``overlay`` merged in recursively (overlay wins)."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def variant_configs(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Resolved config of every variant, ``base`` first, then the sweep in its order.

    The resolved configs carry no ``sweep`` section. Fixed keys (:data:`FIXED_KEYS`) and
    sections outside :data:`OVERLAY_SECTIONS` raise :class:`SweepError`; unknown keys inside a
    section are left to the schema validation of the merged config.
    """
    base = {k: v for k, v in config.items() if k != "sweep"}
    out = {BASE: copy.deepcopy(base)}
    for name, overlay in (config.get("sweep") or {}).items():
        if name in out:
            raise SweepError(f"sweep.{name}: {name!r} is the baseline's name; rename the variant")
        overlay = overlay or {}
        if not isinstance(overlay, dict):
            raise SweepError(f"sweep.{name}: expected a mapping of sections, got {overlay!r}")
        for section, value in overlay.items():
            if section not in OVERLAY_SECTIONS:
                raise SweepError(
                    f"sweep.{name}.{section}: a variant may overlay only "
                    f"{', '.join(OVERLAY_SECTIONS)}"
                )
            for (sec, key), why in FIXED_KEYS.items():
                if sec == section and isinstance(value, dict) and key in value:
                    raise SweepError(f"sweep.{name}.{sec}.{key}: cannot differ per variant ({why})")
        out[name] = merge(base, overlay)
    return out


def schema_error(cfg: dict[str, Any], schema: dict[str, Any], prefix: str = "") -> str | None:
    """The most relevant JSON-schema violation of ``cfg`` as ``prefix.path.to.key: message``.

    Used for the merged config of each variant, so an overlay with an unknown key or a wrong
    type fails with one line naming the variant and the key (Snakemake's own message dumps the
    whole schema). None when ``cfg`` is valid.
    """
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    err = jsonschema.exceptions.best_match(validator.iter_errors(cfg))
    if err is None:
        return None
    where = ".".join(p for p in (prefix, *(str(p) for p in err.absolute_path)) if p)
    return f"{where}: {err.message}" if where else err.message


def _hash(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:_KEY_LEN]


def load_params(cfg: dict[str, Any]) -> dict[str, Any]:
    """The keys of ``cfg`` that decide which videos are usable and their groups (not how they
    decode): :data:`LOAD_KEYS` of ``data``, plus ``cv.group_column``, the metadata column
    copied into each video's group.
    """
    return {
        **{k: cfg["data"][k] for k in LOAD_KEYS},
        "group_column": cfg["cv"]["group_column"],
    }


def decode_params(cfg: dict[str, Any]) -> dict[str, Any]:
    """The data keys of ``cfg`` that decide the decoded clips: :data:`DECODE_KEYS`, and
    ``clips_per_video`` and ``frame_stride`` only when they differ from their defaults (1,
    null/0), so a run made before they existed is not decoded again (the params of a finished
    preprocess job stay the same).
    """
    data = cfg["data"]
    params = {k: data[k] for k in DECODE_KEYS}
    clips = data.get("clips_per_video", default("data", "clips_per_video"))
    if clips != default("data", "clips_per_video"):
        params["clips_per_video"] = clips
    if data.get("frame_stride"):
        params["frame_stride"] = data["frame_stride"]
    return params


def stage_keys(cfg: dict[str, Any]) -> dict[str, str]:
    """Key of each stage of :data:`STAGES` for one resolved config.

    Each key hashes the previous stage's key plus the config that stage adds, so equal keys
    mean equal inputs and params. ``cv`` is the same for every variant of a run and not part
    of the keys (a changed ``cv`` reruns split in place, as without a sweep).
    """
    load = _hash({"data": load_params(cfg)})
    decode = _hash({"load": load, "data": decode_params(cfg)})
    augment = _hash({"decode": decode, "augment": cfg["augment"]})
    train = _hash(
        {"augment": augment, "model": cfg["model"], "train": cfg["train"], "memory": cfg["memory"]}
    )
    return {"load": load, "decode": decode, "augment": augment, "train": train}


def trained_by(keys: dict[str, dict[str, str]]) -> dict[str, str]:
    """For each variant, the first variant (in order) with the same train key.

    A variant identical to an earlier one (e.g. ``same: {}``) reuses that variant's trained
    folds instead of training the same thing twice.
    """
    first: dict[str, str] = {}
    out: dict[str, str] = {}
    for name, k in keys.items():
        out[name] = first.setdefault(k["train"], name)
    return out


def repeat_seed(seed: int, repeat: int) -> int:
    """Fold-assignment seed of repeat ``repeat``: repeat 0 keeps ``cv.seed`` itself.

    Later repeats get a seed derived from (seed, repeat), so repeats are distinct shuffles and
    adding repeats never changes the earlier ones.
    """
    if repeat == 0:
        return int(seed)
    digest = hashlib.sha256(f"fvc-cv-repeat:{int(seed)}:{int(repeat)}".encode()).digest()
    return int.from_bytes(digest[:4], "big")
