# Results: per-fold metrics with mean and std, and plots for `snakemake --report`.


rule aggregate:
    input:
        metrics=get_fold_outputs("metrics.json"),
        predictions=get_fold_outputs("predictions.parquet"),
        excluded=get_upstream("load", "data/excluded.tsv"),
        decode_excluded=get_upstream("decode", "data/decode_excluded.tsv"),
    output:
        results=get_path("variant", "kfold_results.feather"),
        summary=report(
            get_path("variant", "summary.json"),
            caption="../report/summary.rst",
            category="Results",
        ),
    log:
        get_path("variant", "logs/aggregate.log"),
    conda:
        "../../envs/data.yaml"
    params:
        repeats=get_fold_repeats,
    script:
        "../scripts/aggregate.py"


rule plots:
    input:
        predictions=get_fold_outputs("predictions.parquet"),
        histories=get_fold_outputs("history.csv"),
        results=rules.aggregate.output.results,
    output:
        roc=report(
            get_path("variant", "plots/roc_curves.png"),
            caption="../report/roc_curves.rst",
            category="Results",
        ),
        curves=report(
            get_path("variant", "plots/training_curves.png"),
            caption="../report/training_curves.rst",
            category="Training",
        ),
    log:
        get_path("variant", "logs/plots.log"),
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/plots.py"
