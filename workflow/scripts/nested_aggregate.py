"""Rule nested_aggregate: nested_results.feather, nested_summary.json and the report page.

input: selections, predictions, metrics (one per outer fold), outer_splits, naive (the plain
run's summary.json of every variant, in variant order); params: cv, variants.
"""

from fvc.log import setup_logging
from fvc.nested import aggregate_nested

setup_logging(snakemake.log[0])
i, o = snakemake.input, snakemake.output
aggregate_nested(
    list(i.selections),
    list(i.predictions),
    list(i.metrics),
    i.outer_splits,
    dict(zip(snakemake.params.variants, i.naive, strict=True)),
    dict(snakemake.params.cv),
    o.results,
    o.summary,
    o.table,
)
