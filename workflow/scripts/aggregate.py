"""Rule aggregate: fold metrics, pooled metrics, threshold and CIs -> kfold_results + summary.

With repeated K-fold, ``repeats`` gives the repeat of each fold's files and ``splits`` holds one
splits.parquet per repeat.
"""

from fvc.log import setup_logging
from fvc.memory import aggressive_gc
from fvc.report import aggregate_folds

setup_logging(snakemake.log[0])
splits = list(snakemake.input.splits)
aggregate_folds(
    list(snakemake.input.metrics),
    list(snakemake.input.predictions),
    snakemake.output.results,
    snakemake.output.summary,
    splits_path=splits[0] if len(splits) == 1 else splits,
    excluded_paths=[snakemake.input.excluded, snakemake.input.decode_excluded],
    cfg=snakemake.params.results,
    out_html=snakemake.output.table,
    repeats=list(snakemake.params.repeats),
)
aggressive_gc()
