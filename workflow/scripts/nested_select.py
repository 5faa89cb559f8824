"""Checkpoint nested_select: the variant with the best mean inner score of one outer fold.

input: {variant: inner summary.json}; output: selection.json; params: outer, metric.
"""

from fvc.log import exit_on, setup_logging
from fvc.nested import NestedError, write_selection

setup_logging(snakemake.log[0])
with exit_on("fvc.nested", NestedError):
    write_selection(
        int(snakemake.params.outer),
        dict(snakemake.input.items()),
        snakemake.params.metric,
        snakemake.output[0],
    )
