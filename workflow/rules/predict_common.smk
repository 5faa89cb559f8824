# Input and params functions of the predict rules (predict.smk includes this file; functions
# and rules live in separate files, as `snakemake --lint` asks).


def predict_specs():
    """{name: {metadata, root, format}} of `predict.sets`; a missing source fails at start-up
    with one line naming predict.sets.<name> (fvc.predict.set_spec / check_source)."""
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


def predict_data_params():
    """The data keys a predict set is read and decoded with: the base variant's decode
    settings (so clips match the models), positive label and FVC file pattern; the source keys
    (metadata, root, format) come from the set itself."""
    keys = ("fvc_filename", "positive_label")
    base = VARIANTS[BASE]["data"]
    return {**decode_params(), **{k: base[k] for k in keys}}


def get_predict_spec(wildcards):
    """The set's {metadata, root, format}."""
    return PREDICT_SETS[wildcards.name]


def get_predict_source(wildcards):
    """The set's metadata file or folder (an input, so an edited table reruns the set)."""
    return PREDICT_SETS[wildcards.name]["metadata"]


def get_predict_inventory(wildcards):
    """runs/<exp>/predict/data/<name>/inventory.tsv: the set's videos (stat only), rewritten
    when they change, so an added, removed or replaced video reruns the set."""
    from fvc.predict import source_config

    spec = PREDICT_SETS[wildcards.name]
    path = LAYOUT.predict_path(f"data/{wildcards.name}/inventory.tsv")
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
    """The models that score predict sets: every fold's best_model.pt of the base variant
    (predict.model: ensemble) or runs/<exp>/final/model.pt (final), which needs the `refit`
    target."""
    if config["predict"]["model"] == "ensemble":
        return LAYOUT.ensemble_outputs("best_model.pt")
    return [rules.refit.output.model]


def get_predict_predictions(wildcards=None):
    """The base variant's out-of-fold predictions of the predict ensemble's folds."""
    return LAYOUT.ensemble_outputs("predictions.parquet")


def get_predict_outputs():
    """Per predict set: its table, excluded list and metrics (none without predict.sets)."""
    return [
        LAYOUT.predict_path(f"{name}{suffix}")
        for name in PREDICT_SETS
        for suffix in (".parquet", "_excluded.tsv", "_metrics.json")
    ]


def get_predict_metrics(wildcards=None):
    """Metrics of the labelled predict sets, {set: runs/<exp>/predict/<set>_metrics.json}."""
    return {name: LAYOUT.predict_path(f"{name}_metrics.json") for name in PREDICT_SETS}
