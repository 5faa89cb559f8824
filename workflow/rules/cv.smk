# Cross-validation stages: fold assignment and per-fold offline augmentation.


rule split:
    input:
        index=rules.preprocess.output.index,
    output:
        splits=f"{RUN}/splits.parquet",
        summary=report(
            f"{RUN}/splits_summary.tsv",
            caption="../report/splits.rst",
            category="Folds",
        ),
    log:
        f"{RUN}/logs/split.log",
    conda:
        "../../envs/data.yaml"
    params:
        cv=config["cv"],
        previous=f"{get_cache_dir('split')}/splits.parquet",
    script:
        "../scripts/split.py"


rule augment:
    input:
        clips=rules.preprocess.output.clips,
        splits=rules.split.output.splits,
    output:
        clips=f"{RUN}/fold_{{fold}}/augment/clips.npy",
        manifest=f"{RUN}/fold_{{fold}}/augment/manifest.parquet",
    log:
        f"{RUN}/logs/augment/fold_{{fold}}.log",
    benchmark:
        f"{RUN}/benchmarks/augment/fold_{{fold}}.tsv"
    conda:
        "../../envs/torch.yaml"
    params:
        fold="{fold}",
        augment=config["augment"],
    script:
        "../scripts/augment.py"
