# Config validation, output paths and the get_* input helpers shared by all rules.
#
# Paths. Without a `sweep` (and with cv.n_repeats = 1) everything lives under runs/<exp>/ as it
# always has. With a sweep, each variant's own outputs go to runs/<exp>/<variant>/ and upstream
# artifacts to runs/<exp>/shared/<stage>_<key>/, keyed by the config they depend on (fvc.sweep),
# so variants with equal keys share one job. With cv.n_repeats > 1, per-fold paths gain a
# repeat_<r>/ level. Below each root the layout is the same as without a sweep. Every path is
# built here; rules only call these helpers.

import json
import os
import re
import sys
from pathlib import Path

import yaml

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

validate(config, schema="../schemas/config.schema.yaml")

# The library lives in src/fvc; make it importable in every job (local run, conda env, SLURM
# jobstep) even where it is not pip-installed, and here (fvc.sweep and fvc.provenance import
# only the standard library).
_SRC = str(Path(workflow.basedir) / "src")
os.environ.update(
    PYTHONPATH=os.pathsep.join(p for p in (_SRC, os.environ.get("PYTHONPATH")) if p)
)
if _SRC not in sys.path:
    sys.path.insert(0, _SRC)

from fvc import provenance as fvc_provenance
from fvc import sweep as fvc_sweep

EXP = config["experiment"]
RUN = f"runs/{EXP}"
DEMO_DIR = "runs/demo_data"
FOLDS = list(range(config["cv"]["n_splits"]))
N_REPEATS = config["cv"]["n_repeats"]
REPEATS = list(range(N_REPEATS))
SWEEP = bool(config.get("sweep"))


def _resolve_variants():
    """Resolved config of every variant (base first), each validated against the schema."""
    try:
        variants = fvc_sweep.variant_configs(config)
    except fvc_sweep.SweepError as exc:
        raise WorkflowError(str(exc)) from None
    schema_path = Path(workflow.basedir) / "workflow/schemas/config.schema.yaml"
    schema = yaml.safe_load(schema_path.read_text())
    for name, cfg in variants.items():
        if name == fvc_sweep.BASE:
            continue
        error = fvc_sweep.schema_error(cfg, schema, prefix=f"sweep.{name}")
        if error:
            raise WorkflowError(
                f"{error} (in the config of variant {name!r}, overlay applied)"
            )
    return variants


VARIANTS = _resolve_variants()
VARIANT_KEYS = {name: fvc_sweep.stage_keys(cfg) for name, cfg in VARIANTS.items()}
# A variant identical to an earlier one (e.g. `same: {}`) reuses that variant's trained folds.
TRAINED_BY = fvc_sweep.trained_by(VARIANT_KEYS)
# stage -> key -> the first variant with that key (they all share the stage's config).
_VARIANT_OF_KEY = {
    stage: {keys[stage]: name for name, keys in reversed(VARIANT_KEYS.items())}
    for stage in fvc_sweep.STAGES
}
# The workflow's code version, read while parsing: a new commit or uncommitted change is a new
# param of the provenance rule, which then rewrites provenance.json.
CODE_VERSION = fvc_provenance.code_version(workflow.basedir)
# Snakemake's own command line, for provenance.json (a local rule, so it inherits this).
os.environ.update(FVC_SNAKEMAKE_ARGV=json.dumps(sys.argv))


def _alternatives(values):
    return "|".join(re.escape(v) for v in values)


wildcard_constraints:
    fold=r"\d+",
    repeat=r"\d+",
    variant=_alternatives(VARIANTS),
    load_key=_alternatives(_VARIANT_OF_KEY["load"]),
    decode_key=_alternatives(_VARIANT_OF_KEY["decode"]),
    augment_key=_alternatives(_VARIANT_OF_KEY["augment"]),


def _root(stage, constrain=False):
    """Folder (a pattern) of one stage's artifacts: runs/<exp> without a sweep.

    stage: load, decode (preprocess and split), augment, or variant (train and results).
    `constrain` restricts the train outputs' variant wildcard to the variants that train.
    """
    if not SWEEP:
        return RUN
    if stage == "variant":
        if constrain:
            return (
                f"{RUN}/{{variant,{_alternatives(sorted(set(TRAINED_BY.values())))}}}"
            )
        return f"{RUN}/{{variant}}"
    return f"{RUN}/shared/{stage}_{{{stage}_key}}"


def _repeat_dir():
    """The repeat level of per-fold paths: none with a single repeat (today's layout)."""
    return "repeat_{repeat}/" if N_REPEATS > 1 else ""


def get_path(stage, rel):
    """Output/log pattern of a per-stage artifact `rel` (e.g. data/clips.npy)."""
    return f"{_root(stage)}/{rel}"


def get_split_path(rel):
    """Output/log pattern of a per-repeat split artifact (splits.parquet, ...)."""
    return f"{_root('decode')}/{_repeat_dir()}{rel}"


def get_fold_path(stage, rel):
    """Pattern of a file in a fold's folder: <root>/[repeat_<r>/]fold_<k>/<rel>."""
    return f"{_root(stage)}/{_repeat_dir()}fold_{{fold}}/{rel}"


def get_fold_file(stage, folder, ext=""):
    """Pattern of a per-fold log, benchmark or folder: <root>/<folder>/[repeat_<r>/]fold_<k><ext>."""
    return f"{_root(stage)}/{folder}/{_repeat_dir()}fold_{{fold}}{ext}"


def get_train_output(rel):
    """Output pattern of the train rule: only variants that train can match it."""
    return f"{_root('variant', constrain=True)}/{_repeat_dir()}fold_{{fold}}/{rel}"


def _variant_of(wildcards):
    """The variant whose config decides a job: by name, else the first one with the job's key."""
    if "variant" in wildcards.keys():
        return wildcards.variant
    for stage in ("augment", "decode", "load"):
        if f"{stage}_key" in wildcards.keys():
            return _VARIANT_OF_KEY[stage][getattr(wildcards, f"{stage}_key")]
    return fvc_sweep.BASE


def _fill(pattern, variant, wildcards):
    """Concrete path of `pattern` for `variant`, other wildcards (fold, repeat) from the job."""
    keys = {f"{s}_key": k for s, k in VARIANT_KEYS[variant].items()}
    return pattern.format(**{**dict(wildcards.items()), **keys, "variant": variant})


def get_upstream(stage, rel, fold_level=False):
    """Input function: the upstream artifact `rel` of `stage` that this job's variant uses."""
    if stage == "split":
        pattern = get_split_path(rel)
    elif fold_level:
        pattern = get_fold_path(stage, rel)
    else:
        pattern = get_path(stage, rel)

    def _input(wildcards):
        return _fill(pattern, _variant_of(wildcards), wildcards)

    return _input


def get_variant_section(section):
    """Params function: config section `section` of this job's variant (overlay applied)."""

    def _params(wildcards):
        return VARIANTS[_variant_of(wildcards)][section]

    return _params


def get_cv_params(wildcards):
    """The cv config of one repeat: its own fold-assignment seed, no n_repeats (split's view)."""
    cv = {k: v for k, v in config["cv"].items() if k != "n_repeats"}
    repeat = int(wildcards.get("repeat", 0))
    cv["seed"] = fvc_sweep.repeat_seed(cv["seed"], repeat)
    return cv


def get_metadata_source(wildcards=None):
    """The user's metadata (table, list file or class folders), or the generated demo CSV."""
    metadata = VARIANTS[_variant_of(wildcards or {})]["data"]["metadata"]
    return metadata if metadata else f"{DEMO_DIR}/metadata.csv"


def load_params(wildcards=None):
    """The data keys that decide which videos are usable (not how they are decoded)."""
    return fvc_sweep.load_params(VARIANTS[_variant_of(wildcards or {})])


def decode_params(wildcards=None):
    """The data keys that decide the decoded clips."""
    return fvc_sweep.decode_params(VARIANTS[_variant_of(wildcards or {})])


def _fold_ids():
    """(repeat, fold) of every train job of one variant, repeat-major."""
    return [(r, k) for r in REPEATS for k in FOLDS]


def _variant_path(variant, rel):
    """Concrete path of a per-variant artifact (runs/<exp>/<rel> without a sweep)."""
    return get_path("variant", rel).format(variant=variant)


def _variant_fold_outputs(variant, name):
    """Per-(repeat, fold) train output `name` of `variant`, from the variant that trained it."""
    pattern = get_fold_path("variant", name)
    trained = TRAINED_BY[variant]
    return [pattern.format(variant=trained, repeat=r, fold=k) for r, k in _fold_ids()]


def get_fold_outputs(name):
    """Input function: one path per (repeat, fold) of the train output `name` (metrics.json)."""

    def _input(wildcards):
        return _variant_fold_outputs(_variant_of(wildcards), name)

    return _input


def get_fold_repeats(wildcards=None):
    """The repeat of each path of get_fold_outputs, in the same order."""
    return [r for r, _ in _fold_ids()]


def get_comparison_inputs(name):
    """Train output `name` of every (variant, repeat, fold): variant-major, as compare reads it."""
    return [p for v in VARIANTS for p in _variant_fold_outputs(v, name)]


def get_comparison_params():
    """What compare needs to pair the folds: variant order and the (repeat, fold) of each path."""
    return {
        "variants": list(VARIANTS),
        "fold_ids": [list(ids) for ids in _fold_ids()],
        "n_splits": len(FOLDS),
    }


def get_variant_summary():
    """Per variant: its overlay, stage keys and the variant whose trained folds it uses."""
    sweep = config.get("sweep") or {}
    return {
        name: {
            "overlay": sweep.get(name) or {},
            "keys": VARIANT_KEYS[name],
            "trained_by": TRAINED_BY[name],
        }
        for name in VARIANTS
    }


def get_results_outputs():
    """Every final result except provenance.json: all variants' folds, tables and plots."""
    out = []
    for variant in VARIANTS:
        for name in (
            "metrics.json",
            "predictions.parquet",
            "history.csv",
            "best_model.pt",
        ):
            out += _variant_fold_outputs(variant, name)
        out += [
            _variant_path(variant, rel)
            for rel in (
                "kfold_results.feather",
                "summary.json",
                "plots/roc_curves.png",
                "plots/training_curves.png",
            )
        ]
    if SWEEP:
        out += [f"{RUN}/comparison.tsv", f"{RUN}/comparison.png"]
    return list(dict.fromkeys(out))


def get_final_outputs():
    """The targets of the all rule, per-fold results included, so that a deleted fold output
    is regenerated (Snakemake skips missing intermediates whose consumers are up to date).
    """
    return [*get_results_outputs(), f"{RUN}/provenance.json"]
