# Predict sets: the trained models applied to new videos. Each configured set is read, probed
# and decoded like the training set (own inventory and decode cache), then scored by every fold
# model; only built when predict.sets is not empty. With a sweep the sets stay in
# runs/<exp>/predict/ and are scored by the base variant (its decode settings, fold models and
# threshold; with repeats, repeat 0's fold models).


include: "predict_common.smk"


rule predict_data:
    input:
        metadata=get_predict_source,
        inventory=get_predict_inventory,
    output:
        metadata=LAYOUT.predict_path("data/{name}/metadata.parquet"),
        clips=LAYOUT.predict_path("data/{name}/clips.npy"),
        index=LAYOUT.predict_path("data/{name}/clips.parquet"),
        excluded=LAYOUT.predict_path("data/{name}/excluded.tsv"),
    log:
        f"{RUN}/logs/predict_data/{{name}}.log",
    benchmark:
        f"{RUN}/benchmarks/predict_data/{{name}}.tsv"
    wildcard_constraints:
        name=alternatives(PREDICT_SETS) or "(?!)",
    conda:
        "../../envs/data.yaml"
    threads: config["data"]["workers"]
    params:
        name="{name}",
        spec=get_predict_spec,
        data=predict_data_params(),
        cache=LAYOUT.cache_dir("predict/{name}"),
    script:
        "../scripts/predict_data.py"


rule predict:
    input:
        clips=rules.predict_data.output.clips,
        index=rules.predict_data.output.index,
        excluded=rules.predict_data.output.excluded,
        models=get_predict_models,
        summary=get_upstream(LAYOUT.path("variant", "summary.json")),
        predictions=get_predict_predictions,
        train_index=get_upstream(LAYOUT.path("decode", "data/clips.parquet")),
    output:
        table=LAYOUT.predict_path("{name}.parquet"),
        excluded=LAYOUT.predict_path("{name}_excluded.tsv"),
        metrics=LAYOUT.predict_path("{name}_metrics.json"),
    log:
        f"{RUN}/logs/predict/{{name}}.log",
    benchmark:
        f"{RUN}/benchmarks/predict/{{name}}.tsv"
    wildcard_constraints:
        name=alternatives(PREDICT_SETS) or "(?!)",
    conda:
        "../../envs/torch.yaml"
    threads: config["data"]["workers"]
    params:
        name="{name}",
        model=config["predict"]["model"],
        batch_size=VARIANTS[BASE]["train"]["batch_size"],
    script:
        "../scripts/predict.py"


# The table of every labelled predict set's metrics (in the report when there is one).
rule predict_metrics:
    input:
        unpack(get_predict_metrics),
    output:
        table=report(
            LAYOUT.predict_path("metrics.tsv"),
            caption="../report/predict_metrics.rst",
            category="Predict sets",
        ),
    log:
        f"{RUN}/logs/predict_metrics.log",
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/predict_metrics.py"
