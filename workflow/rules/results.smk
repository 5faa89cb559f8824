# Results: per-fold metrics with mean and std, and plots for `snakemake --report`.


rule aggregate:
    input:
        metrics=get_fold_outputs("metrics.json"),
        predictions=get_fold_outputs("predictions.parquet"),
        excluded=rules.load_data.output.excluded,
        decode_excluded=rules.preprocess.output.excluded,
    output:
        results=f"{RUN}/kfold_results.feather",
        summary=report(
            f"{RUN}/summary.json",
            caption="../report/summary.rst",
            category="Results",
        ),
    log:
        f"{RUN}/logs/aggregate.log",
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/aggregate.py"


rule plots:
    input:
        predictions=get_fold_outputs("predictions.parquet"),
        histories=get_fold_outputs("history.csv"),
        results=rules.aggregate.output.results,
    output:
        roc=report(
            f"{RUN}/plots/roc_curves.png",
            caption="../report/roc_curves.rst",
            category="Results",
        ),
        curves=report(
            f"{RUN}/plots/training_curves.png",
            caption="../report/training_curves.rst",
            category="Training",
        ),
    log:
        f"{RUN}/logs/plots.log",
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/plots.py"
