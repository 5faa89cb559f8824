# Nested cross-validation (cv.outer_splits N >= 2, README "Honest estimates"; src/fvc/nested.py):
# outer_split -> per outer fold o: split_inner, augment_inner, train_inner, aggregate_inner (every
# variant cross-validated on the outer training part) -> nested_select (checkpoint) ->
# augment_outer, refit_outer (the selected variant on the whole outer training part) ->
# outer_test (scored once on the outer test part) -> nested_aggregate. The plain run is made as
# well (the model to deploy). Paths: runs/<exp>/outer_<o>/ (INNER, fvc.layout).


include: "nested_common.smk"


rule outer_split:
    input:
        metadata=get_upstream(LAYOUT.path("load", "data/metadata.parquet")),
    output:
        splits=LAYOUT.outer_split_path("outer_splits.parquet"),
        summary=report(
            LAYOUT.outer_split_path("outer_splits_summary.tsv"),
            caption="../report/outer_splits.rst",
            category="Honest estimate",
        ),
    log:
        LAYOUT.path("load", "logs/outer_split.log"),
    conda:
        "../../envs/data.yaml"
    params:
        cv=get_outer_cv_params(),
    script:
        "../scripts/outer_split.py"


use rule split as split_inner with:
    input:
        unpack(get_inner_split_inputs),
    output:
        splits=INNER.split_path("splits.parquet"),
        summary=INNER.split_path("splits_summary.tsv"),
    log:
        INNER.path("split", f"logs/{INNER.repeat_dir}split.log"),
    params:
        cv=get_cv_params,
        previous=f"{INNER.cache_dir('split', 'split')}/{INNER.repeat_dir}splits.parquet",
        outer="{outer}",


use rule augment as augment_inner with:
    input:
        clips=get_upstream(INNER.path("decode", "data/clips.npy")),
        splits=get_upstream(INNER.split_path("splits.parquet")),
    output:
        clips=INNER.fold_path("augment", "augment/clips.npy"),
        manifest=INNER.fold_path("augment", "augment/manifest.parquet"),
    log:
        INNER.fold_file("augment", "logs/augment", ".log"),
    benchmark:
        INNER.fold_file("augment", "benchmarks/augment", ".tsv")


use rule train as train_inner with:
    input:
        clips=get_upstream(INNER.path("decode", "data/clips.npy")),
        index=get_upstream(INNER.path("decode", "data/clips.parquet")),
        splits=get_upstream(INNER.split_path("splits.parquet")),
        aug_clips=get_upstream(INNER.fold_path("augment", "augment/clips.npy")),
        aug_manifest=get_upstream(
            INNER.fold_path("augment", "augment/manifest.parquet")
        ),
    output:
        metrics=INNER.train_output("metrics.json"),
        predictions=INNER.train_output("predictions.parquet"),
        history=INNER.train_output("history.csv"),
        model=INNER.train_output("best_model.pt"),
        memory_log=INNER.train_output("memory.jsonl"),
    log:
        INNER.fold_file("variant", "logs/train", ".log"),
    benchmark:
        INNER.fold_file("variant", "benchmarks/train", ".tsv")
    params:
        fold="{fold}",
        model=get_variant_section("model"),
        train=get_result_section("train"),
        memory=non_operational("memory"),
        checkpoint_dir=INNER.fold_file("variant", "checkpoints"),


use rule aggregate as aggregate_inner with:
    input:
        metrics=get_inner_fold_outputs("metrics.json"),
        predictions=get_inner_fold_outputs("predictions.parquet"),
        splits=get_inner_split_files,
        excluded=get_upstream(INNER.path("load", "data/excluded.tsv")),
        decode_excluded=get_upstream(INNER.path("decode", "data/decode_excluded.tsv")),
    output:
        results=INNER.path("variant", "kfold_results.feather"),
        summary=INNER.path("variant", "summary.json"),
        table=INNER.path("variant", "kfold_results.html"),
    log:
        INNER.path("variant", "logs/aggregate.log"),


checkpoint nested_select:
    input:
        unpack(get_inner_summaries),
    output:
        LAYOUT.outer_path("selection.json"),
    log:
        LAYOUT.outer_path("logs/select.log"),
    conda:
        "../../envs/data.yaml"
    params:
        outer="{outer}",
        metric=SELECT_METRIC,
    script:
        "../scripts/nested_select.py"


use rule augment_final as augment_outer with:
    input:
        clips=get_upstream(INNER.path("decode", "data/clips.npy")),
        splits=get_outer_training_splits,
    output:
        clips=INNER.path("augment", "final/augment/clips.npy"),
        manifest=INNER.path("augment", "final/augment/manifest.parquet"),
    log:
        INNER.path("augment", "logs/augment/final.log"),
    benchmark:
        INNER.path("augment", "benchmarks/augment/final.tsv")
    params:
        fold="all",
        augment=get_variant_section("augment"),


use rule refit as refit_outer with:
    input:
        unpack(get_outer_refit_inputs),
    output:
        model=LAYOUT.outer_refit_path("model.pt"),
        history=LAYOUT.outer_refit_path("history.csv"),
        memory_log=LAYOUT.outer_refit_path("memory.jsonl"),
        info=LAYOUT.outer_refit_path("refit.json"),
    log:
        INNER.path("variant", "logs/refit.log"),
    benchmark:
        INNER.path("variant", "benchmarks/refit.tsv")
    params:
        model=get_variant_section("model"),
        train=get_result_section("train"),
        memory=non_operational("memory"),
        checkpoint_dir=INNER.path("variant", "checkpoints/final"),


rule outer_test:
    input:
        unpack(get_outer_test_inputs),
    output:
        predictions=LAYOUT.outer_path("test_predictions.parquet"),
        metrics=LAYOUT.outer_path("test_metrics.json"),
    log:
        LAYOUT.outer_path("logs/outer_test.log"),
    benchmark:
        LAYOUT.outer_path("benchmarks/outer_test.tsv")
    conda:
        "../../envs/torch.yaml"
    threads: config["data"]["workers"]
    params:
        batch_size=VARIANTS[BASE]["train"]["batch_size"],
    script:
        "../scripts/outer_test.py"


rule nested_aggregate:
    input:
        unpack(get_nested_inputs),
    output:
        results=f"{RUN}/nested_results.feather",
        summary=report(
            f"{RUN}/nested_summary.json",
            caption="../report/nested_summary.rst",
            category="Honest estimate",
        ),
        table=report(
            f"{RUN}/nested_results.html",
            caption="../report/nested_results.rst",
            category="Honest estimate",
        ),
    log:
        f"{RUN}/logs/nested_aggregate.log",
    conda:
        "../../envs/data.yaml"
    params:
        cv=config["cv"],
        variants=LAYOUT.variants,
    script:
        "../scripts/nested_aggregate.py"
