"""Rule `load_data`: read the metadata, probe every video -> metadata.parquet, excluded.tsv.

input: metadata (table, list file or class folder); output: metadata, excluded;
params: data (data config keys), min_per_class (int, cv.n_splits); threads: probe processes.
A bad table or too few usable videos logs a one-line error and exits 1, writing nothing.
"""

import logging
import sys

from fvc.data import DataError, load_metadata
from fvc.log import setup_logging
from fvc.memory import aggressive_gc

setup_logging(snakemake.log[0])
try:
    load_metadata(
        dict(snakemake.params.data),
        snakemake.input.metadata,
        snakemake.output.metadata,
        snakemake.output.excluded,
        int(snakemake.params.min_per_class),
        workers=snakemake.threads,
    )
except DataError as exc:
    logging.getLogger("fvc.load_data").error("%s", exc)
    sys.exit(1)
aggressive_gc()
