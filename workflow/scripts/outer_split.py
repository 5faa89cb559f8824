"""Rule outer_split: the usable videos into cv.outer_splits outer folds (nested CV).

input: metadata (metadata.parquet); output: splits (outer_splits.parquet), summary; params: cv.
Too few videos or groups for the outer folds: one-line error, exit 1.
"""

from fvc.log import exit_on, setup_logging
from fvc.nested import NestedError, outer_split
from fvc.splits import SplitError

setup_logging(snakemake.log[0])
with exit_on("fvc.nested", NestedError, SplitError):
    outer_split(
        snakemake.input.metadata,
        snakemake.output.splits,
        snakemake.output.summary,
        dict(snakemake.params.cv),
    )
