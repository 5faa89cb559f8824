"""Rule predict_metrics: one row per labelled predict set (the table in the report)."""

from fvc import io
from fvc.log import setup_logging
from fvc.plots import predict_metrics_table

setup_logging(snakemake.log[0])
io.write_tsv(snakemake.output.table, predict_metrics_table(dict(snakemake.input.items())))
