"""Rule `preprocess`: decode every usable video once -> clips.npy, clips.parquet, decode_excluded.

input: metadata (metadata.parquet); output: clips, index, excluded; params: data (num_frames,
size, short_videos; an optional `workers` caps the processes), optional min_per_class (int);
threads: decoder processes.
"""

import logging
import sys

from fvc.data import DataError, build_clip_cache
from fvc.log import setup_logging
from fvc.memory import aggressive_gc

setup_logging(snakemake.log[0])
try:
    build_clip_cache(
        snakemake.input.metadata,
        snakemake.output.clips,
        snakemake.output.index,
        snakemake.output.excluded,
        dict(snakemake.params.data),
        workers=snakemake.threads,
        min_per_class=int(getattr(snakemake.params, "min_per_class", 1)),
    )
except DataError as exc:
    logging.getLogger("fvc.preprocess").error("%s", exc)
    sys.exit(1)
aggressive_gc()
