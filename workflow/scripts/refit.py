"""Rule `refit`: train the final model on every usable video (fvc.refit), resuming from its
checkpoint directory.

input: clips, index, splits, aug_clips, aug_manifest (final/augment/), metrics (every fold's
metrics.json); output: model, history, memory_log, info; params: model, train, memory (the
result-affecting keys; the operational ones come from snakemake.config), checkpoint_dir;
resources.runtime (minutes, optional: the time budget); threads (fvc.train.rule_arguments).
Exits 75 after a deliberate stop (signal or time budget) with a checkpoint written, so
Snakemake's retry resumes; 2 with one log line when a fold's metrics.json is unusable.
"""

import sys

from fvc.log import setup_logging
from fvc.refit import refit
from fvc.train import FinalOutputs, FoldInputs, rule_arguments

setup_logging(snakemake.log[0])
i, o = snakemake.input, snakemake.output
sys.exit(
    refit(
        FoldInputs(i.clips, i.index, i.splits, i.aug_clips, i.aug_manifest),
        list(i.metrics),
        FinalOutputs(o.model, o.history, o.memory_log),
        o.info,
        **rule_arguments(snakemake),
    )
)
