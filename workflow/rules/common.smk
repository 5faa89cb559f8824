# Config validation, output paths and the get_* input helpers shared by all rules.

import os
from pathlib import Path

import yaml
from snakemake.utils import validate

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


def load_params():
    """The data keys that decide which videos are usable (not how they are decoded)."""
    keys = (
        "metadata",
        "root",
        "format",
        "fvc_filename",
        "positive_label",
        "group_column",
    )
    return {k: config["data"][k] for k in keys}


def decode_params():
    """The data keys that decide the decoded clips."""
    keys = ("num_frames", "size", "short_videos")
    return {k: config["data"][k] for k in keys}


def result_params(section):
    """The keys of config `section` that change results: keys marked x-operational in the schema
    (workers, checkpoint cadence, device, GC cadence) are left out, so that changing one does not
    rerun finished jobs; scripts read those from snakemake.config."""
    props = _SCHEMA["properties"][section]["properties"]
    return {
        k: v
        for k, v in config[section].items()
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
        f"{RUN}/plots/roc_curves.png",
        f"{RUN}/plots/training_curves.png",
    ]
