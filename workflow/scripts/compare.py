"""Rule `compare`: every variant's per-fold metrics vs the baseline -> comparison.tsv + plot.

input: metrics (variant-major, (repeat, fold)-minor); output: table, plot;
params: variants (names, base first), fold_ids ([repeat, fold] of each path of one variant),
n_splits (int); log: one file.
"""

from fvc.compare import write_comparison
from fvc.log import setup_logging
from fvc.memory import aggressive_gc

setup_logging(snakemake.log[0])
write_comparison(
    list(snakemake.params.variants),
    [tuple(ids) for ids in snakemake.params.fold_ids],
    list(snakemake.input.metrics),
    snakemake.output.table,
    snakemake.output.plot,
    int(snakemake.params.n_splits),
    list(snakemake.input.predictions),
)
aggressive_gc()
