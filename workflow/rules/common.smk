# Config validation, output paths and the get_* input helpers shared by all rules.

import os
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
# jobstep) even where it is not pip-installed.
_SRC = str(Path(workflow.basedir) / "src")
os.environ.update(
    PYTHONPATH=os.pathsep.join(p for p in (_SRC, os.environ.get("PYTHONPATH")) if p)
)
# ...and in this process too: get_dataset_inventory() calls fvc while the DAG is built.
if Path(_SRC).is_dir() and _SRC not in sys.path:
    sys.path.insert(0, _SRC)

EXP = config["experiment"]
RUN = f"runs/{EXP}"
DEMO_DIR = "runs/demo_data"
FOLDS = list(range(config["cv"]["n_splits"]))


wildcard_constraints:
    fold=r"\d+",


def get_metadata_source():
    """The user's metadata (table, list file or class folders), or the generated demo CSV."""
    metadata = config["data"]["metadata"]
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


def get_dataset_inventory():
    """runs/<exp>/data/inventory.tsv of the training videos, an input of load_data (see
    scan_videos); [] for the generated demo, whose videos are the workflow's own output.
    """
    if not config["data"]["metadata"]:
        return []
    return scan_videos(
        get_metadata_source(), load_params(), f"{RUN}/data/inventory.tsv"
    )


def get_cache_dir(stage):
    """State a stage keeps between runs of one experiment (not an output: Snakemake deletes a
    rule's outputs before it runs, and the rerun needs the previous result to reuse it).
    """
    return f"{RUN}/cache/{stage}"


def load_params():
    """The keys that decide which videos are usable and their groups (not how they are decoded):
    data keys, plus cv.group_column, the metadata column copied into each video's group.
    """
    keys = ("metadata", "root", "format", "fvc_filename", "positive_label")
    return {
        **{k: config["data"][k] for k in keys},
        "group_column": config["cv"]["group_column"],
    }


def decode_params():
    """The data keys that decide the decoded clips. clips_per_video and frame_stride only when
    they differ from their defaults (1, null/0), so a run made before they existed is not
    decoded again (the params of a finished preprocess job stay the same).
    """
    keys = ("num_frames", "size", "short_videos", "resize")
    params = {k: config["data"][k] for k in keys}
    if config["data"]["clips_per_video"] != 1:
        params["clips_per_video"] = config["data"]["clips_per_video"]
    if config["data"]["frame_stride"]:
        params["frame_stride"] = config["data"]["frame_stride"]
    return params


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


def get_fold_outputs(name):
    """One path per fold of the per-fold train output `name` (e.g. metrics.json)."""
    return expand(f"{RUN}/fold_{{fold}}/{name}", fold=FOLDS)


def get_refit_inputs(wildcards):
    """The final model's inputs: the decoded clips, every usable video (splits), their
    augmented copies and every fold's metrics.json (for the median best epoch)."""
    return {
        "clips": rules.preprocess.output.clips,
        "index": rules.preprocess.output.index,
        "splits": rules.split.output.splits,
        "aug_clips": rules.augment_final.output.clips,
        "aug_manifest": rules.augment_final.output.manifest,
        "metrics": get_fold_outputs("metrics.json"),
    }


def get_final_outputs():
    """The targets of the all rule, per-fold results included, so that a deleted fold output
    is regenerated (Snakemake skips missing intermediates whose consumers are up to date).
    """
    per_fold = [
        get_fold_outputs(name)
        for name in (
            "metrics.json",
            "predictions.parquet",
            "history.csv",
            "best_model.pt",
        )
    ]
    return [
        *(path for paths in per_fold for path in paths),
        f"{RUN}/kfold_results.feather",
        f"{RUN}/summary.json",
        *get_report_outputs(),
        *get_predict_outputs(),
    ]


# ----------------------------------------------------------------------------- predict sets


def predict_specs():
    """{name: {metadata, root, format}} of `predict.sets`; a missing source fails at start-up
    with one line naming predict.sets.<name> (fvc.predict.set_spec / check_source).
    """
    from fvc.predict import PredictError, check_source, set_spec

    specs = {}
    for name, value in ((config.get("predict") or {}).get("sets") or {}).items():
        try:
            specs[name] = set_spec(name, value)
            check_source(name, specs[name])
        except PredictError as exc:
            raise WorkflowError(str(exc)) from None
    return specs


PREDICT_SETS = predict_specs()


def predict_set_pattern():
    """Wildcard constraint of {name}: exactly the configured set names."""
    import re

    return "|".join(re.escape(n) for n in PREDICT_SETS) or "(?!)"


def predict_data_params():
    """The data keys a predict set is read and decoded with: the training's decode settings
    (so clips match the models), positive label and FVC file pattern; the source keys
    (metadata, root, format) come from the set itself.
    """
    keys = ("fvc_filename", "positive_label")
    return {**decode_params(), **{k: config["data"][k] for k in keys}}


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


def get_predict_models(wildcards):
    """The models that score predict sets: every fold's best_model.pt (predict.model:
    ensemble) or runs/<exp>/final/model.pt (final), which needs the `refit` target.
    """
    if config["predict"]["model"] == "ensemble":
        return get_fold_outputs("best_model.pt")
    path = (
        rules.refit.output.model
    )  # runs/<exp>/final/model.pt, built by `snakemake refit`
    return [path]


def get_predict_outputs():
    """Per predict set: its table, excluded list and metrics (none without predict.sets)."""
    return [
        f"{RUN}/predict/{name}{suffix}"
        for name in PREDICT_SETS
        for suffix in (".parquet", "_excluded.tsv", "_metrics.json")
    ]


def results_params():
    """The cv keys that decide the pooled results (threshold, bootstrap CIs and its groups)."""
    keys = ("threshold", "bootstrap_samples", "seed", "group_column")
    return {k: config["cv"][k] for k in keys}


def get_benchmark_files():
    """Every benchmark: file of the run (runtime and peak memory per job, for the report)."""
    return [
        rules.load_data.benchmark,
        rules.preprocess.benchmark,
        *expand(rules.augment.benchmark, fold=FOLDS),
        *expand(rules.train.benchmark, fold=FOLDS),
    ]


def get_predict_metrics(wildcards=None):
    """Metrics of the labelled predict sets, {set: runs/<exp>/predict/<set>_metrics.json}.

    Empty until predict exists (issue 9 point 3): the predict_metrics rule is the hook.
    """
    sets = (config.get("predict") or {}).get("sets") or {}
    return {name: f"{RUN}/predict/{name}_metrics.json" for name in sets}


def get_report_outputs():
    """The report's figures and tables, taken from the rules that make them."""
    outputs = [
        *rules.plots.output,
        rules.memory_plot.output.png,
        *rules.benchmarks.output,
        rules.aggregate.output.table,
    ]
    if get_predict_metrics():
        outputs.append(rules.predict_metrics.output.table)
    return outputs
