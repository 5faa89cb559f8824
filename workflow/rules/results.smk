# Results: per-fold metrics with mean and std, pooled out-of-fold metrics with a chosen threshold
# and bootstrap CIs, and the figures and tables of `snakemake --report`.


rule aggregate:
    input:
        metrics=get_fold_outputs("metrics.json"),
        predictions=get_fold_outputs("predictions.parquet"),
        splits=rules.split.output.splits,
        excluded=rules.load_data.output.excluded,
        decode_excluded=rules.preprocess.output.excluded,
    output:
        results=f"{RUN}/kfold_results.feather",
        summary=report(
            f"{RUN}/summary.json",
            caption="../report/summary.rst",
            category="Results",
            subcategory="Metrics",
        ),
        table=report(
            f"{RUN}/kfold_results.html",
            caption="../report/kfold_results.rst",
            category="Results",
            subcategory="Metrics",
        ),
    log:
        f"{RUN}/logs/aggregate.log",
    conda:
        "../../envs/data.yaml"
    params:
        results=results_params(),
    script:
        "../scripts/aggregate.py"


rule plots:
    input:
        predictions=get_fold_outputs("predictions.parquet"),
        histories=get_fold_outputs("history.csv"),
        summary=rules.aggregate.output.summary,
    output:
        roc=report(
            f"{RUN}/plots/roc_curves.png",
            caption="../report/roc_curves.rst",
            category="Results",
            subcategory="Curves",
        ),
        pr=report(
            f"{RUN}/plots/pr_curves.png",
            caption="../report/pr_curves.rst",
            category="Results",
            subcategory="Curves",
        ),
        calibration=report(
            f"{RUN}/plots/calibration.png",
            caption="../report/calibration.rst",
            category="Results",
            subcategory="Calibration",
        ),
        confusion=report(
            f"{RUN}/plots/confusion_matrix.png",
            caption="../report/confusion_matrix.rst",
            category="Results",
            subcategory="Metrics",
        ),
        curves=report(
            f"{RUN}/plots/training_curves.png",
            caption="../report/training_curves.rst",
            category="Training",
            subcategory="Curves",
        ),
    log:
        f"{RUN}/logs/plots.log",
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/plots.py"


rule memory_plot:
    input:
        memory=get_fold_outputs("memory.jsonl"),
    output:
        png=report(
            f"{RUN}/plots/memory.png",
            caption="../report/memory.rst",
            category="Training",
            subcategory="Memory",
        ),
    log:
        f"{RUN}/logs/memory_plot.log",
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/memory_plot.py"


rule benchmarks:
    input:
        benchmarks=get_benchmark_files(),
    output:
        table=report(
            f"{RUN}/benchmarks.tsv",
            caption="../report/benchmarks.rst",
            category="Resources",
            subcategory="Run time and memory",
        ),
        png=report(
            f"{RUN}/plots/benchmarks.png",
            caption="../report/benchmarks.rst",
            category="Resources",
            subcategory="Run time and memory",
        ),
    log:
        f"{RUN}/logs/benchmarks.log",
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/benchmarks.py"


# Hook for issue 9 point 3 (predict): once a rule writes runs/<exp>/predict/<set>_metrics.json,
# get_predict_metrics() lists them and this table joins the report and the final outputs.
rule predict_metrics:
    input:
        unpack(get_predict_metrics),
    output:
        table=report(
            f"{RUN}/predict/metrics.tsv",
            caption="../report/predict_metrics.rst",
            category="Predict sets",
        ),
    log:
        f"{RUN}/logs/predict_metrics.log",
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/predict_metrics.py"
