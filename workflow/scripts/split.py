"""Rule split: stratified (group-aware) K-fold assignment -> splits.parquet, splits_summary.tsv.

params: cv (config section), previous (where the last assignment is kept, so the log says how
many videos changed folds); split_inner (nested CV) adds input outer and params outer. Too
few videos or groups for the folds: one-line error, exit 1.
"""

from fvc.log import exit_on, setup_logging
from fvc.memory import aggressive_gc
from fvc.splits import SplitError, split_dataset

setup_logging(snakemake.log[0])
with exit_on("fvc.split", SplitError):
    split_dataset(
        snakemake.input.index,
        snakemake.output.splits,
        snakemake.output.summary,
        dict(snakemake.params.cv),
        previous=getattr(snakemake.params, "previous", None),
        # nested CV's inner split: only the training part of outer fold params.outer
        outer=(snakemake.input.outer, int(snakemake.params.outer))
        if hasattr(snakemake.params, "outer")
        else None,
    )
aggressive_gc()
