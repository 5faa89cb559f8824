"""Rule aggregate: per-fold metrics + mean/std -> kfold_results.feather and summary.json."""

from fvc.log import setup_logging
from fvc.memory import aggressive_gc
from fvc.report import aggregate_folds

setup_logging(snakemake.log[0])
aggregate_folds(
    list(snakemake.input.metrics),
    list(snakemake.input.predictions),
    snakemake.output.results,
    snakemake.output.summary,
    excluded_paths=[snakemake.input.excluded, snakemake.input.decode_excluded],
    repeats=list(snakemake.params.repeats),
)
aggressive_gc()
