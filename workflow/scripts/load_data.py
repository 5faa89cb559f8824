"""Rule `load_data`: read the metadata, probe every video -> metadata.parquet, excluded.tsv.

input: metadata (table, list file or class folder), inventory (the videos' stat list, only
there to make Snakemake rerun this rule when a video changes); output: metadata, excluded;
params: data (data config keys), min_per_class (int, cv.n_splits); threads: probe processes.
A bad table or too few usable videos logs a one-line error and exits 1, writing nothing.
"""

from fvc.data import DataError, load_metadata
from fvc.log import exit_on, setup_logging
from fvc.memory import aggressive_gc

setup_logging(snakemake.log[0])
with exit_on("fvc.load_data", DataError):
    load_metadata(
        dict(snakemake.params.data),
        snakemake.input.metadata,
        snakemake.output.metadata,
        snakemake.output.excluded,
        int(snakemake.params.min_per_class),
        workers=snakemake.threads,
    )
aggressive_gc()
