# Model selection: every sweep variant against the baseline on the same (repeat, fold) splits.


rule compare:
    input:
        metrics=get_comparison_inputs("metrics.json"),
        predictions=get_comparison_inputs("predictions.parquet"),
    output:
        table=report(
            f"{RUN}/comparison.tsv",
            caption="../report/comparison_table.rst",
            category="Comparison",
        ),
        plot=report(
            f"{RUN}/comparison.png",
            caption="../report/comparison_plot.rst",
            category="Comparison",
        ),
    log:
        f"{RUN}/logs/compare.log",
    conda:
        "../../envs/data.yaml"
    params:
        **get_comparison_params(),
    script:
        "../scripts/compare.py"
