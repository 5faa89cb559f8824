"""Rule split: stratified (group-aware) K-fold assignment -> splits.parquet."""

from fvc.log import setup_logging
from fvc.memory import aggressive_gc
from fvc.splits import split_dataset

setup_logging(snakemake.log[0])
split_dataset(
    snakemake.input.index,
    snakemake.output.splits,
    snakemake.output.summary,
    dict(snakemake.params.cv),
)
aggressive_gc()
