"""Rules `augment` and `augment_final`: pre-generate augmented copies of fold k's training
videos, or of every video for the final model.

input: clips (data/clips.npy), splits (splits.parquet); output: clips, manifest;
params: fold (int, or "all": every video), augment (the config's `augment:` dict); log: one file.
"""

from fvc.augment import augment_fold
from fvc.log import setup_logging
from fvc.memory import aggressive_gc

setup_logging(snakemake.log[0])
augment_fold(
    clips_path=snakemake.input.clips,
    splits_path=snakemake.input.splits,
    fold=None if snakemake.params.fold == "all" else int(snakemake.params.fold),
    out_clips=snakemake.output.clips,
    out_manifest=snakemake.output.manifest,
    augment_cfg=dict(snakemake.params.augment),
    threads=snakemake.threads,
)
aggressive_gc()
