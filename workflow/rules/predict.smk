# Predict sets (issue 9 point 3): the trained models applied to new videos. Each configured
# set is read, probed and decoded like the training set (own inventory and decode cache),
# then scored by every fold model; only built when predict.sets is not empty. With a sweep the
# sets stay in runs/<exp>/predict/ and are scored by the base variant (its decode settings,
# fold models and threshold; with repeats, repeat 0's fold models).


rule predict_data:
    input:
        metadata=get_predict_source,
        inventory=get_predict_inventory,
    output:
        metadata=f"{RUN}/predict/data/{{name}}/metadata.parquet",
        clips=f"{RUN}/predict/data/{{name}}/clips.npy",
        index=f"{RUN}/predict/data/{{name}}/clips.parquet",
        excluded=f"{RUN}/predict/data/{{name}}/excluded.tsv",
    log:
        f"{RUN}/logs/predict_data/{{name}}.log",
    benchmark:
        f"{RUN}/benchmarks/predict_data/{{name}}.tsv"
    wildcard_constraints:
        name=predict_set_pattern(),
    conda:
        "../../envs/data.yaml"
    threads: config["data"]["workers"]
    params:
        name="{name}",
        spec=get_predict_spec,
        data=predict_data_params(),
        cache=get_cache_dir("predict/{name}"),
    script:
        "../scripts/predict_data.py"


rule predict:
    input:
        clips=rules.predict_data.output.clips,
        index=rules.predict_data.output.index,
        excluded=rules.predict_data.output.excluded,
        models=get_predict_models,
        summary=get_upstream("variant", "summary.json"),
        predictions=get_predict_predictions,
        train_index=get_upstream("decode", "data/clips.parquet"),
    output:
        table=f"{RUN}/predict/{{name}}.parquet",
        excluded=f"{RUN}/predict/{{name}}_excluded.tsv",
        metrics=f"{RUN}/predict/{{name}}_metrics.json",
    log:
        f"{RUN}/logs/predict/{{name}}.log",
    benchmark:
        f"{RUN}/benchmarks/predict/{{name}}.tsv"
    wildcard_constraints:
        name=predict_set_pattern(),
    conda:
        "../../envs/torch.yaml"
    threads: config["data"]["workers"]
    params:
        name="{name}",
        model=config["predict"]["model"],
        batch_size=VARIANTS[fvc_sweep.BASE]["train"]["batch_size"],
    script:
        "../scripts/predict.py"
