# Input and params functions of the nested cross-validation rules (nested.smk includes this
# file; functions and rules live in separate files, as `snakemake --lint` asks).


def get_outer_cv_params():
    """The cv keys the outer split depends on (not n_splits, n_repeats or select_metric)."""
    keys = ("outer_splits", "seed", "group_column")
    return {k: config["cv"][k] for k in keys}


def get_inner_split_inputs(wildcards):
    """An inner split's clip index (its variant's decode key) and the outer split."""
    variant = _variant_of(wildcards)
    return {
        "index": LAYOUT.fill(INNER.path("decode", "data/clips.parquet"), variant),
        "outer": LAYOUT.fill(LAYOUT.outer_split_path("outer_splits.parquet"), variant),
    }


def get_inner_fold_outputs(name):
    """Input function: output `name` of every inner (repeat, fold) of the job's variant."""

    def _input(wildcards):
        return INNER.fold_outputs(_variant_of(wildcards), name, outer=wildcards.outer)

    return _input


def get_inner_split_files(wildcards):
    """The inner splits.parquet of every repeat of the job's variant and outer fold."""
    return INNER.split_files(_variant_of(wildcards), outer=wildcards.outer)


def get_inner_summaries(wildcards):
    """{variant: inner summary.json} of every variant in outer fold `outer` (what selects)."""
    return {
        variant: INNER.variant_path(variant, "summary.json", outer=wildcards.outer)
        for variant in LAYOUT.variants
    }


def get_outer_training_splits(wildcards):
    """Repeat 0's inner splits.parquet: every video of the outer training part (the refit's
    data, as repeat 0's splits are the plain refit's)."""
    return INNER.split_files(_variant_of(wildcards), outer=wildcards.outer)[0]


def get_outer_refit_inputs(wildcards):
    """A variant's refit on the outer training part: its decoded clips, the outer training part,
    their augmented copies and its inner folds' metrics of repeat 0 (median best epoch).
    """
    variant, outer = _variant_of(wildcards), wildcards.outer
    augment = INNER.path("augment", "final/augment")
    return {
        "clips": LAYOUT.fill(INNER.path("decode", "data/clips.npy"), variant),
        "index": LAYOUT.fill(INNER.path("decode", "data/clips.parquet"), variant),
        "splits": INNER.split_files(variant, outer=outer)[0],
        "aug_clips": LAYOUT.fill(f"{augment}/clips.npy", variant, outer=outer),
        "aug_manifest": LAYOUT.fill(
            f"{augment}/manifest.parquet", variant, outer=outer
        ),
        "metrics": INNER.fold_outputs(variant, "metrics.json", outer=outer)[
            : LAYOUT.n_splits
        ],
    }


def _selected(outer):
    """The variant nested_select chose for outer fold `outer` (a checkpoint: the DAG is
    re-evaluated once selection.json exists)."""
    path = checkpoints.nested_select.get(outer=outer).output[0]
    with open(path) as fh:
        return json.load(fh)["selected"]


def get_outer_test_inputs(wildcards):
    """The selected variant's refit model, its decoded clips, the outer split, the selection
    and the selected variant's inner summary.json (its threshold)."""
    outer = wildcards.outer
    selected = _selected(outer)
    trained = LAYOUT.trained_by[selected]
    return {
        "model": LAYOUT.fill(rules.refit_outer.output.model, trained, outer=outer),
        "clips": LAYOUT.fill(INNER.path("decode", "data/clips.npy"), selected),
        "index": LAYOUT.fill(INNER.path("decode", "data/clips.parquet"), selected),
        "outer_splits": LAYOUT.fill(
            LAYOUT.outer_split_path("outer_splits.parquet"), BASE
        ),
        "selection": rules.nested_select.output[0].format(outer=outer),
        "summary": INNER.variant_path(selected, "summary.json", outer=outer),
    }


def get_nested_inputs(wildcards=None):
    """Every outer fold's selection, test predictions and metrics, the outer split and the
    plain run's variants' summary.json (the naive best CV)."""
    outers = LAYOUT.outer_folds
    return {
        "selections": [rules.nested_select.output[0].format(outer=o) for o in outers],
        "predictions": [
            rules.outer_test.output.predictions.format(outer=o) for o in outers
        ],
        "metrics": [rules.outer_test.output.metrics.format(outer=o) for o in outers],
        "outer_splits": LAYOUT.fill(
            LAYOUT.outer_split_path("outer_splits.parquet"), BASE
        ),
        "naive": [LAYOUT.variant_path(v, "summary.json") for v in LAYOUT.variants],
    }


def get_nested_outputs():
    """The nested run's results (none without cv.outer_splits)."""
    if not LAYOUT.nested:
        return []
    return [
        rules.nested_aggregate.output.results,
        rules.nested_aggregate.output.summary,
        rules.nested_aggregate.output.table,
    ]
