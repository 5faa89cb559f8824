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

if "group_column" in config.get("data", {}):
    _value = config["data"]["group_column"]
    raise ValueError(
        "data.group_column is no longer a key: cv.group_column names the metadata column that "
        f"groups clips; replace `data.group_column: {_value}` by `cv.group_column: {_value}`"
    )
validate(config, schema="../schemas/config.schema.yaml")
with open(
    Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml"
) as _fh:
    _SCHEMA = yaml.safe_load(_fh)

# The library lives in src/fvc; make it importable in every job (local run, conda env, SLURM
# jobstep) even where it is not pip-installed, and here: fvc.sweep and fvc.provenance while
# parsing, get_dataset_inventory() and the predict helpers while the DAG is built.
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


def non_operational(section, values=None):
    """The keys of config `section` (or of `values`, e.g. a variant's section) that change
    results: keys marked x-operational in the schema (workers, checkpoint cadence, device, GC
    cadence) are left out, so that changing one does not rerun finished jobs; scripts read those
    from snakemake.config. (Not results_params(): the cv keys of the results rules.)"""
    props = _SCHEMA["properties"][section]["properties"]
    return {
        k: v
        for k, v in (config[section] if values is None else values).items()
        if not props.get(k, {}).get("x-operational")
    }


def _without_operational(cfg):
    """A variant's config without the schema's x-operational keys (workers, checkpoint cadence,
    device, GC cadence): they change how a job runs, not its result, so they are not part of
    the stage keys (a variant differing only in them shares the base's folds)."""
    return {**cfg, **{s: non_operational(s, cfg[s]) for s in ("train", "memory")}}


VARIANT_KEYS = {
    name: fvc_sweep.stage_keys(_without_operational(cfg))
    for name, cfg in VARIANTS.items()
}
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


def get_cache_dir(stage, root=None):
    """State a stage keeps between runs (not an output: Snakemake deletes a rule's outputs
    before it runs, and the rerun needs the previous result to reuse it): <root>/cache/<stage>,
    where <root> is the folder of the shared stage whose artifacts the cache belongs to (e.g.
    "decode": one cache per decode key), or runs/<exp> (None). A pattern without a sweep too.
    """
    base = _root(root) if root else RUN
    return f"{base}/cache/{stage}"


def get_metadata_source(wildcards=None):
    """The user's metadata (table, list file or class folders), or the generated demo CSV."""
    metadata = VARIANTS[_variant_of(wildcards or {})]["data"]["metadata"]
    return metadata if metadata else f"{DEMO_DIR}/metadata.csv"


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
    return _fill(get_path("load", "data/inventory.tsv"), variant, {})


def get_dataset_inventory(wildcards=None):
    """Input function of load_data: the inventory of this job's load key (see scan_videos;
    written while parsing, below)."""
    return _variant_inventory(_variant_of(wildcards or {}))


def load_params(wildcards=None):
    """The keys that decide which videos are usable and their groups (not how they are decoded):
    data keys, plus cv.group_column, the metadata column copied into each video's group.
    """
    return fvc_sweep.load_params(VARIANTS[_variant_of(wildcards or {})])


def decode_params(wildcards=None):
    """The data keys that decide the decoded clips (fvc.sweep.decode_params)."""
    return fvc_sweep.decode_params(VARIANTS[_variant_of(wildcards or {})])


# Scan the training videos now, while parsing (once per load key): Snakemake notes which files
# exist before it evaluates input functions, so an inventory first written from an input
# function would count as missing on the first run.
for _variant in dict.fromkeys(_VARIANT_OF_KEY["load"].values()):
    if _variant_inventory(_variant):
        scan_videos(
            VARIANTS[_variant]["data"]["metadata"],
            fvc_sweep.load_params(VARIANTS[_variant]),
            _variant_inventory(_variant),
        )


def get_split_files(wildcards=None):
    """Input function: splits.parquet of every repeat of this job's variant, repeat order."""
    variant = _variant_of(wildcards or {})
    pattern = get_split_path("splits.parquet")
    return [_fill(pattern, variant, {"repeat": r}) for r in REPEATS]


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


def results_params():
    """The cv keys that decide the pooled results (threshold, bootstrap CIs and its groups)."""
    keys = ("threshold", "bootstrap_samples", "seed", "group_column")
    return {k: config["cv"][k] for k in keys}


def get_benchmark_files(wildcards=None):
    """Input function: every benchmark: file of one variant's run (runtime and peak memory per
    job, for the report): its load, preprocess, augment and train jobs, shared or not.
    """
    variant = _variant_of(wildcards or {})
    trained = TRAINED_BY[variant]
    ids = [{"repeat": r, "fold": k} for r, k in _fold_ids()]
    return [
        _fill(rules.load_data.benchmark, variant, {}),
        _fill(rules.preprocess.benchmark, variant, {}),
        *(_fill(rules.augment.benchmark, variant, i) for i in ids),
        *(_fill(rules.train.benchmark, trained, i) for i in ids),
    ]


def get_report_outputs():
    """The report's figures and tables of every variant, from the rules that make them."""
    patterns = [
        *rules.plots.output,
        rules.memory_plot.output.png,
        *rules.benchmarks.output,
        rules.aggregate.output.table,
    ]
    outputs = [_fill(p, v, {}) for v in VARIANTS for p in patterns]
    if get_predict_metrics():
        outputs.append(rules.predict_metrics.output.table)
    return list(dict.fromkeys(outputs))


def get_results_outputs():
    """Every final result except provenance.json: all variants' folds, tables and plots, and
    the predict sets."""
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
            for rel in ("kfold_results.feather", "summary.json")
        ]
    out += get_report_outputs()
    if SWEEP:
        out += [f"{RUN}/comparison.tsv", f"{RUN}/comparison.png"]
    out += get_predict_outputs()
    return list(dict.fromkeys(out))


def get_result_section(section):
    """Params function: the result-affecting keys (non_operational) of this job's variant's
    config section: a finished fold reruns when one of them changes, not for an operational
    key (the train script reads those from the config)."""
    variant_section = get_variant_section(section)

    def _params(wildcards):
        return non_operational(section, variant_section(wildcards))

    return _params


def get_base_upstream(rel):
    """The base variant's upstream artifact `rel` (data/clips.npy, data/clips.parquet or
    splits.parquet of repeat 0): the final model is the base variant's (refit)."""
    if rel == "splits.parquet":
        return _fill(get_split_path(rel), fvc_sweep.BASE, {"repeat": 0})
    return _fill(get_path("decode", rel), fvc_sweep.BASE, {})


def get_refit_inputs(wildcards):
    """The final model's inputs: the base variant's decoded clips, every usable video (splits
    of repeat 0), their augmented copies and its folds' metrics.json (median best epoch).
    """
    return {
        "clips": get_base_upstream("data/clips.npy"),
        "index": get_base_upstream("data/clips.parquet"),
        "splits": get_base_upstream("splits.parquet"),
        "aug_clips": rules.augment_final.output.clips,
        "aug_manifest": rules.augment_final.output.manifest,
        "metrics": _predict_fold_outputs("metrics.json"),
    }


def get_final_outputs():
    """The targets of the all rule, per-fold results included, so that a deleted fold output
    is regenerated (Snakemake skips missing intermediates whose consumers are up to date).
    """
    return [*get_results_outputs(), f"{RUN}/provenance.json"]


# ----------------------------------------------------------------------------- predict sets
# Predict sets live at runs/<exp>/predict/ with or without a sweep and are scored by the base
# variant's models (with repeats: repeat 0's fold models), with its decode settings and
# out-of-fold threshold.


def predict_specs():
    """{name: {metadata, root, format}} of `predict.sets`; a missing source fails at start-up
    with one line naming predict.sets.<name> (fvc.predict.set_spec / check_source).
    """
    sets = (config.get("predict") or {}).get("sets") or {}
    # no import of fvc.predict (torch) without sets: every job's Snakemake parses this file
    if not sets:
        return {}
    from fvc.predict import PredictError, check_source, set_spec

    specs = {}
    for name, value in sets.items():
        try:
            specs[name] = set_spec(name, value)
            check_source(name, specs[name])
        except PredictError as exc:
            raise WorkflowError(str(exc)) from None
    return specs


PREDICT_SETS = predict_specs()


def predict_set_pattern():
    """Wildcard constraint of {name}: exactly the configured set names."""
    return _alternatives(PREDICT_SETS) or "(?!)"


def predict_data_params():
    """The data keys a predict set is read and decoded with: the base variant's decode
    settings (so clips match the models), positive label and FVC file pattern; the source keys
    (metadata, root, format) come from the set itself.
    """
    keys = ("fvc_filename", "positive_label")
    base = VARIANTS[fvc_sweep.BASE]["data"]
    return {**decode_params(), **{k: base[k] for k in keys}}


def get_predict_spec(wildcards):
    """The set's {metadata, root, format}."""
    return PREDICT_SETS[wildcards.name]


def get_predict_source(wildcards):
    """The set's metadata file or folder (an input, so an edited table reruns the set)."""
    return PREDICT_SETS[wildcards.name]["metadata"]


def get_predict_inventory(wildcards):
    """runs/<exp>/predict/data/<name>/inventory.tsv: the set's videos (stat only), rewritten
    when they change, so an added, removed or replaced video reruns the set (issue 11).
    """
    from fvc.predict import source_config

    spec = PREDICT_SETS[wildcards.name]
    path = f"{RUN}/predict/data/{wildcards.name}/inventory.tsv"
    if workflow.is_main_process:
        from fvc.inventory import update_inventory

        cfg = source_config(predict_data_params(), spec)
        change = update_inventory(spec["metadata"], cfg, path, labels=False)
        if change:
            print(
                f"fvc: predict set {wildcards.name} changed: {change.summary()} ({path})",
                file=sys.stderr,
            )
    return path


def _predict_fold_outputs(name):
    """Train output `name` of the base variant's folds of repeat 0 (the predict ensemble)."""
    pattern = get_fold_path("variant", name)
    trained = TRAINED_BY[fvc_sweep.BASE]
    return [pattern.format(variant=trained, repeat=0, fold=k) for k in FOLDS]


def get_predict_models(wildcards):
    """The models that score predict sets: every fold's best_model.pt of the base variant
    (predict.model: ensemble) or runs/<exp>/final/model.pt (final), which needs the `refit`
    target.
    """
    if config["predict"]["model"] == "ensemble":
        return _predict_fold_outputs("best_model.pt")
    return [
        rules.refit.output.model
    ]  # runs/<exp>/final/model.pt, built by `snakemake refit`


def get_predict_predictions(wildcards=None):
    """The base variant's out-of-fold predictions of the predict ensemble's folds."""
    return _predict_fold_outputs("predictions.parquet")


def get_predict_outputs():
    """Per predict set: its table, excluded list and metrics (none without predict.sets)."""
    return [
        f"{RUN}/predict/{name}{suffix}"
        for name in PREDICT_SETS
        for suffix in (".parquet", "_excluded.tsv", "_metrics.json")
    ]


def get_predict_metrics(wildcards=None):
    """Metrics of the labelled predict sets, {set: runs/<exp>/predict/<set>_metrics.json}."""
    sets = (config.get("predict") or {}).get("sets") or {}
    return {name: f"{RUN}/predict/{name}_metrics.json" for name in sets}
