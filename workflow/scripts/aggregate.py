"""Rule aggregate: fold metrics, pooled metrics, threshold and CIs -> kfold_results + summary."""

from fvc.log import setup_logging
from fvc.memory import aggressive_gc
from fvc.report import aggregate_folds

setup_logging(snakemake.log[0])
aggregate_folds(
    list(snakemake.input.metrics),
    list(snakemake.input.predictions),
    snakemake.output.results,
    snakemake.output.summary,
    splits_path=snakemake.input.splits,
    excluded_paths=[snakemake.input.excluded, snakemake.input.decode_excluded],
    cfg=snakemake.params.results,
    out_html=snakemake.output.table,
)
aggressive_gc()
