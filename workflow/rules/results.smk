# Results: per-fold metrics with mean and std, pooled out-of-fold metrics with a chosen threshold
# and bootstrap CIs, and the figures and tables of `snakemake --report`.


rule aggregate:
    input:
        metrics=get_fold_outputs("metrics.json"),
        predictions=get_fold_outputs("predictions.parquet"),
        splits=get_split_files,
        excluded=get_upstream(LAYOUT.path("load", "data/excluded.tsv")),
        decode_excluded=get_upstream(LAYOUT.path("decode", "data/decode_excluded.tsv")),
    output:
        results=LAYOUT.path("variant", "kfold_results.feather"),
        summary=report(
            LAYOUT.path("variant", "summary.json"),
            caption="../report/summary.rst",
            category="Results",
            subcategory="Metrics",
        ),
        table=report(
            LAYOUT.path("variant", "kfold_results.html"),
            caption="../report/kfold_results.rst",
            category="Results",
            subcategory="Metrics",
        ),
    log:
        LAYOUT.path("variant", "logs/aggregate.log"),
    conda:
        "../../envs/data.yaml"
    params:
        repeats=get_fold_repeats,
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
            LAYOUT.path("variant", "plots/roc_curves.png"),
            caption="../report/roc_curves.rst",
            category="Results",
            subcategory="Curves",
        ),
        pr=report(
            LAYOUT.path("variant", "plots/pr_curves.png"),
            caption="../report/pr_curves.rst",
            category="Results",
            subcategory="Curves",
        ),
        calibration=report(
            LAYOUT.path("variant", "plots/calibration.png"),
            caption="../report/calibration.rst",
            category="Results",
            subcategory="Calibration",
        ),
        confusion=report(
            LAYOUT.path("variant", "plots/confusion_matrix.png"),
            caption="../report/confusion_matrix.rst",
            category="Results",
            subcategory="Metrics",
        ),
        curves=report(
            LAYOUT.path("variant", "plots/training_curves.png"),
            caption="../report/training_curves.rst",
            category="Training",
            subcategory="Curves",
        ),
    log:
        LAYOUT.path("variant", "logs/plots.log"),
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/plots.py"


rule memory_plot:
    input:
        memory=get_fold_outputs("memory.jsonl"),
    output:
        png=report(
            LAYOUT.path("variant", "plots/memory.png"),
            caption="../report/memory.rst",
            category="Training",
            subcategory="Memory",
        ),
    log:
        LAYOUT.path("variant", "logs/memory_plot.log"),
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/memory_plot.py"


rule benchmarks:
    input:
        benchmarks=get_benchmark_files,
    output:
        table=report(
            LAYOUT.path("variant", "benchmarks.tsv"),
            caption="../report/benchmarks.rst",
            category="Resources",
            subcategory="Run time and memory",
        ),
        png=report(
            LAYOUT.path("variant", "plots/benchmarks.png"),
            caption="../report/benchmarks.rst",
            category="Resources",
            subcategory="Run time and memory",
        ),
    log:
        LAYOUT.path("variant", "logs/benchmarks.log"),
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/benchmarks.py"
