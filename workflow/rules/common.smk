# Config validation and the input/params functions shared by the rules. Every path comes from
# LAYOUT (fvc.layout.Layout, unit-tested on its own); rules never build paths themselves.
# Helpers used by one rule file only live in that file (data, predict, refit, compare).

import json
import os
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

try:
    from fvc import config as fvc_config
    from fvc import provenance as fvc_provenance
    from fvc import sweep as fvc_sweep
    from fvc import layout as fvc_layout
    from fvc.layout import Layout, alternatives
except ModuleNotFoundError as _exc:
    raise WorkflowError(
        f"the fvc package is not installed in this Python ({sys.executable}): run "
        f"`pip install -e <this workflow's folder>` (or `make venv`), or use --sdm conda ({_exc})"
    ) from None


if "group_column" in config.get("data", {}):
    _value = config["data"]["group_column"]
    raise ValueError(
        "data.group_column is no longer a key: cv.group_column names the metadata column that "
        f"groups clips; replace `data.group_column: {_value}` by `cv.group_column: {_value}`"
    )
validate(config, schema=str(fvc_config.SCHEMA_PATH))


def _resolve_variants():
    """Resolved config of every variant (base first), each validated against the schema."""
    try:
        variants = fvc_sweep.variant_configs(config)
    except fvc_sweep.SweepError as exc:
        raise WorkflowError(str(exc)) from None
    for name, cfg in variants.items():
        if name == fvc_sweep.BASE:
            continue
        error = fvc_sweep.schema_error(cfg, fvc_config.schema(), prefix=f"sweep.{name}")
        if error:
            raise WorkflowError(
                f"{error} (in the config of variant {name!r}, overlay applied)"
            )
    return variants


# This workflow's checkout (also when another workflow uses it as a `module`, where
# workflow.basedir is that workflow's folder). The conda environments' post-deploy scripts
# install the fvc package from here (envs/*.post-deploy.sh).
FVC_DIR = Path(str(workflow.current_basedir)).parents[1]
os.environ.setdefault("FVC_SOURCE", str(FVC_DIR))
VARIANTS = _resolve_variants()
SWEEP = bool(config.get("sweep"))
LAYOUT = Layout.from_variants(
    config["experiment"], VARIANTS, config["cv"], sweep_on=SWEEP
)
RUN = LAYOUT.run
BASE = fvc_sweep.BASE
# The outer folds' inner cross-validations of a nested run (cv.outer_splits, nested.smk).
INNER = LAYOUT.inner_layout()
if config["cv"]["outer_splits"] == 1:
    raise WorkflowError(
        "cv.outer_splits: 1 outer fold leaves no test part; use 0 (off) or 2 or more"
    )
if LAYOUT.nested and len({keys["load"] for keys in LAYOUT.keys.values()}) > 1:
    _other = [
        v
        for v in LAYOUT.variants
        if LAYOUT.keys[v]["load"] != LAYOUT.keys[BASE]["load"]
    ]
    raise WorkflowError(
        f"cv.outer_splits: nested CV scores every variant on the same outer test videos, but "
        f"sweep variant(s) {', '.join(_other)} read other videos (data.metadata, root, format, "
        "fvc_filename, positive_label or cv.group_column differ); drop them or cv.outer_splits"
    )
# The mean inner score that selects a variant (nested CV) and the naive winner
# (fvc.nested.select_metric; not imported here: every job's Snakemake parses this file).
SELECT_METRIC = config["cv"]["select_metric"] or VARIANTS[BASE]["train"]["best_metric"]
# runs/<exp>/layout.json: where this run's artifacts are, for tools outside the workflow
# (fvc predict finds the models the predict rule uses); rewritten only when it changes.
if workflow.is_main_process:
    fvc_layout.write_record(LAYOUT, f"{RUN}/{LAYOUT.RECORD}")
# The workflow's code version, read while parsing: a new commit or uncommitted change is a new
# param of the provenance rule, which then rewrites provenance.json.
CODE_VERSION = fvc_provenance.code_version(FVC_DIR)
# Snakemake's own command line, for provenance.json (a local rule, so it inherits this).
os.environ.update(FVC_SNAKEMAKE_ARGV=json.dumps(sys.argv))


wildcard_constraints:
    **LAYOUT.wildcard_constraints(),


def non_operational(section, values=None):
    """The result-affecting keys of config `section` (or of `values`, a variant's section):
    x-operational keys (workers, checkpoint cadence, device, GC cadence) are left out, so that
    changing one does not rerun finished jobs; scripts read those from snakemake.config.
    """
    return fvc_config.non_operational(
        section, config[section] if values is None else values
    )


def _variant_of(wildcards):
    """The variant whose config decides a job: by name, else the first one with the job's key."""
    if "variant" in wildcards.keys():
        return wildcards.variant
    for stage in ("augment", "decode", "load"):
        if f"{stage}_key" in wildcards.keys():
            return LAYOUT.variant_of_key(stage, getattr(wildcards, f"{stage}_key"))
    return BASE


def _fill(pattern, variant, wildcards):
    """Concrete `pattern` for `variant`, the job's other wildcards (fold, repeat, outer)."""
    return LAYOUT.fill(pattern, variant, **dict(wildcards.items()))


def get_attempt(wildcards, attempt):
    """Resource function: Snakemake's attempt of the job (1, then 2, ... on retries), which a
    script cannot see otherwise (the train and refit rules publish a run that completed in an
    earlier attempt again instead of retraining it)."""
    return attempt


def get_upstream(pattern):
    """Input function: the upstream artifact `pattern` (a LAYOUT pattern) of this job's variant."""

    def _input(wildcards):
        return _fill(pattern, _variant_of(wildcards), wildcards)

    return _input


def get_variant_section(section):
    """Params function: config section `section` of this job's variant (overlay applied)."""

    def _params(wildcards):
        return VARIANTS[_variant_of(wildcards)][section]

    return _params


def get_result_section(section):
    """Params function: the result-affecting keys (non_operational) of this job's variant's
    config section: a finished fold reruns when one of them changes, not for an operational
    key (the train script reads those from the config)."""
    variant_section = get_variant_section(section)

    def _params(wildcards):
        return non_operational(section, variant_section(wildcards))

    return _params


def load_params(wildcards=None):
    """The keys that decide which videos are usable and their groups (not how they are decoded):
    data keys, plus cv.group_column, the metadata column copied into each video's group.
    """
    return fvc_sweep.load_params(VARIANTS[_variant_of(wildcards or {})])


def decode_params(wildcards=None):
    """The data keys that decide the decoded clips (fvc.sweep.decode_params)."""
    return fvc_sweep.decode_params(VARIANTS[_variant_of(wildcards or {})])


def get_cv_params(wildcards):
    """The cv config of one repeat: its own fold-assignment seed, without the keys that do not
    decide the folds (n_repeats, and nested CV's outer_splits and select_metric)."""
    skip = ("n_repeats", "outer_splits", "select_metric")
    cv = {k: v for k, v in config["cv"].items() if k not in skip}
    repeat = int(wildcards.get("repeat", 0))
    cv["seed"] = fvc_sweep.repeat_seed(cv["seed"], repeat)
    return cv


def get_split_files(wildcards=None):
    """Input function: splits.parquet of every repeat of this job's variant, repeat order."""
    return LAYOUT.split_files(_variant_of(wildcards or {}))


def get_fold_outputs(name):
    """Input function: one path per (repeat, fold) of the train output `name` (metrics.json)."""

    def _input(wildcards):
        return LAYOUT.fold_outputs(_variant_of(wildcards), name)

    return _input


def get_fold_repeats(wildcards=None):
    """The repeat of each path of get_fold_outputs, in the same order."""
    return [r for r, _ in LAYOUT.fold_ids()]


def results_params():
    """The cv keys that decide the pooled results (threshold, bootstrap CIs and its groups)."""
    keys = ("threshold", "bootstrap_samples", "seed", "group_column")
    return {k: config["cv"][k] for k in keys}


def get_benchmark_files(wildcards=None):
    """Input function: every benchmark: file of one variant's run (runtime and peak memory per
    job, for the report): its load, preprocess, augment and train jobs, shared or not.
    """
    variant = _variant_of(wildcards or {})
    trained = LAYOUT.trained_by[variant]
    ids = [{"repeat": r, "fold": k} for r, k in LAYOUT.fold_ids()]
    return [
        LAYOUT.fill(rules.load_data.benchmark, variant),
        LAYOUT.fill(rules.preprocess.benchmark, variant),
        *(LAYOUT.fill(rules.augment.benchmark, variant, **i) for i in ids),
        *(LAYOUT.fill(rules.train.benchmark, trained, **i) for i in ids),
    ]


def get_report_outputs():
    """The report's figures and tables of every variant, from the rules that make them."""
    patterns = [
        *rules.plots.output,
        rules.memory_plot.output.png,
        *rules.benchmarks.output,
        rules.aggregate.output.table,
    ]
    outputs = [LAYOUT.fill(p, v) for v in LAYOUT.variants for p in patterns]
    if get_predict_metrics():
        outputs.append(rules.predict_metrics.output.table)
    return list(dict.fromkeys(outputs))


def get_results_outputs():
    """Every final result except provenance.json: all variants' folds, tables and plots, and
    the predict sets."""
    out = []
    for variant in LAYOUT.variants:
        for name in (
            "metrics.json",
            "predictions.parquet",
            "history.csv",
            "best_model.pt",
        ):
            out += LAYOUT.fold_outputs(variant, name)
        out += [
            LAYOUT.variant_path(variant, rel)
            for rel in ("kfold_results.feather", "summary.json")
        ]
    out += get_report_outputs()
    if SWEEP:
        out += [rules.compare.output.table, rules.compare.output.plot]
    out += get_nested_outputs()
    out += get_predict_outputs()
    return list(dict.fromkeys(out))


def get_final_outputs():
    """The targets of the all rule, per-fold results included, so that a deleted fold output
    is regenerated (Snakemake skips missing intermediates whose consumers are up to date).
    """
    return [*get_results_outputs(), rules.provenance.output[0]]


# ----------------------------------------------------------------------------- data
def get_metadata_source(wildcards=None):
    """The user's metadata (table, list file or class folders), or the generated demo CSV."""
    metadata = VARIANTS[_variant_of(wildcards or {})]["data"]["metadata"]
    return metadata if metadata else rules.make_demo.output.metadata


def scan_videos(source, data_cfg, inventory):
    """Rescan the videos `source` lists into the file `inventory`; return its path.

    Snakemake sees a metadata file but not the videos behind it; the inventory lists every
    video with its size and mtime (one stat each, never a read) and is rewritten only when
    that list changed, so a rule taking it as input reruns when a video is added, removed or
    replaced, with the reason "Updated input files: <inventory>". Only the main process scans
    (not each cluster job). Any set of videos can use it (a predict set: its own inventory).
    """
    if workflow.is_main_process:
        from fvc.inventory import update_inventory

        change = update_inventory(source, data_cfg, inventory)
        if change:
            print(
                f"fvc: the dataset changed: {change.summary()} ({inventory})",
                file=sys.stderr,
            )
    return inventory


def _variant_inventory(variant):
    """<load root>/data/inventory.tsv of `variant`'s training videos (runs/<exp>/data/
    inventory.tsv without a sweep); [] for the generated demo, whose videos are the workflow's
    own output."""
    if not VARIANTS[variant]["data"]["metadata"]:
        return []
    return LAYOUT.fill(LAYOUT.path("load", "data/inventory.tsv"), variant)


def get_dataset_inventory(wildcards=None):
    """Input function of load_data: the inventory of this job's load key (see scan_videos;
    written while parsing, below)."""
    return _variant_inventory(_variant_of(wildcards or {}))


# Scan the training videos now, while parsing (once per load key): Snakemake notes which files
# exist before it evaluates input functions, so an inventory first written from an input
# function would count as missing on the first run.
for _variant in LAYOUT.representatives("load"):
    if _variant_inventory(_variant):
        scan_videos(
            VARIANTS[_variant]["data"]["metadata"],
            fvc_sweep.load_params(VARIANTS[_variant]),
            _variant_inventory(_variant),
        )


# ----------------------------------------------------------------------------- refit
def get_refit_inputs(wildcards):
    """The final model's inputs: the base variant's decoded clips, every usable video (splits
    of repeat 0), their augmented copies and its folds' metrics.json (median best epoch).
    """
    return {
        "clips": LAYOUT.fill(rules.preprocess.output.clips, BASE),
        "index": LAYOUT.fill(rules.preprocess.output.index, BASE),
        "splits": LAYOUT.split_files(BASE)[0],
        "aug_clips": rules.augment_final.output.clips,
        "aug_manifest": rules.augment_final.output.manifest,
        "metrics": LAYOUT.fold_outputs(BASE, "metrics.json")[: LAYOUT.n_splits],
    }


# ----------------------------------------------------------------------------- compare
def get_comparison_inputs(name):
    """Train output `name` of every (variant, repeat, fold): variant-major, as compare reads it."""
    return [p for v in LAYOUT.variants for p in LAYOUT.fold_outputs(v, name)]


def get_comparison_params():
    """What compare needs to pair the folds: variant order and the (repeat, fold) of each path."""
    return {
        "variants": LAYOUT.variants,
        "fold_ids": [list(ids) for ids in LAYOUT.fold_ids()],
        "n_splits": LAYOUT.n_splits,
    }


# ----------------------------------------------------------------------------- provenance
def get_variant_summary():
    """Per variant: its overlay, stage keys and the variant whose trained folds it uses."""
    sweep = config.get("sweep") or {}
    return {
        name: {
            "overlay": sweep.get(name) or {},
            "keys": dict(LAYOUT.keys[name]),
            "trained_by": LAYOUT.trained_by[name],
        }
        for name in LAYOUT.variants
    }
