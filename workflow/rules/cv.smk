# Cross-validation stages: fold assignment and per-fold offline augmentation.


rule split:
    input:
        index=get_upstream("decode", "data/clips.parquet"),
    output:
        splits=get_split_path("splits.parquet"),
        summary=report(
            get_split_path("splits_summary.tsv"),
            caption="../report/splits.rst",
            category="Folds",
        ),
    log:
        get_path("decode", f"logs/{_repeat_dir()}split.log"),
    conda:
        "../../envs/data.yaml"
    params:
        cv=get_cv_params,
        previous=f"{get_cache_dir('split', 'decode')}/{_repeat_dir()}splits.parquet",
    script:
        "../scripts/split.py"


rule augment:
    input:
        clips=get_upstream("decode", "data/clips.npy"),
        splits=get_upstream("split", "splits.parquet"),
    output:
        clips=get_fold_path("augment", "augment/clips.npy"),
        manifest=get_fold_path("augment", "augment/manifest.parquet"),
    log:
        get_fold_file("augment", "logs/augment", ".log"),
    benchmark:
        get_fold_file("augment", "benchmarks/augment", ".tsv")
    conda:
        "../../envs/torch.yaml"
    params:
        fold="{fold}",
        augment=get_variant_section("augment"),
    script:
        "../scripts/augment.py"
