# Cross-validation stages: fold assignment and per-fold offline augmentation.


rule split:
    input:
        index=get_upstream(LAYOUT.path("decode", "data/clips.parquet")),
    output:
        splits=LAYOUT.split_path("splits.parquet"),
        summary=report(
            LAYOUT.split_path("splits_summary.tsv"),
            caption="../report/splits.rst",
            category="Folds",
        ),
    log:
        LAYOUT.path("split", f"logs/{LAYOUT.repeat_dir}split.log"),
    conda:
        "../../envs/data.yaml"
    params:
        cv=get_cv_params,
        previous=f"{LAYOUT.cache_dir('split', 'split')}/{LAYOUT.repeat_dir}splits.parquet",
    script:
        "../scripts/split.py"


rule augment:
    input:
        clips=get_upstream(LAYOUT.path("decode", "data/clips.npy")),
        splits=get_upstream(LAYOUT.split_path("splits.parquet")),
    output:
        clips=LAYOUT.fold_path("augment", "augment/clips.npy"),
        manifest=LAYOUT.fold_path("augment", "augment/manifest.parquet"),
    log:
        LAYOUT.fold_file("augment", "logs/augment", ".log"),
    benchmark:
        LAYOUT.fold_file("augment", "benchmarks/augment", ".tsv")
    conda:
        "../../envs/torch.yaml"
    params:
        fold="{fold}",
        augment=get_variant_section("augment"),
    script:
        "../scripts/augment.py"
