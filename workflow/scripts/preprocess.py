"""Rule `preprocess`: decode every usable video once -> clips.npy, clips.parquet, decode_excluded.

input: metadata (metadata.parquet); output: clips, index, excluded; params: data (num_frames,
size, short_videos, resize, clips_per_video and frame_stride when not default; an optional
`workers` caps the processes), cache (folder of the previous
run's clips: unchanged videos are not decoded again), optional min_per_class (int);
threads: decoder processes.
"""

from fvc.data import DataError, build_clip_cache
from fvc.log import exit_on, setup_logging
from fvc.memory import aggressive_gc

setup_logging(snakemake.log[0])
with exit_on("fvc.preprocess", DataError):
    build_clip_cache(
        snakemake.input.metadata,
        snakemake.output.clips,
        snakemake.output.index,
        snakemake.output.excluded,
        dict(snakemake.params.data),
        workers=snakemake.threads,
        min_per_class=int(getattr(snakemake.params, "min_per_class", 1)),
        cache_dir=getattr(snakemake.params, "cache", None),
    )
aggressive_gc()
