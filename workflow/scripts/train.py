"""Rule `train`: train fold k, resuming from its checkpoint directory, and publish its outputs.

input: clips, index, splits, aug_clips, aug_manifest; output: metrics, predictions, history,
model, memory_log; params: fold (int), model, train, memory (the result-affecting keys of those
config sections; the operational keys come from snakemake.config), checkpoint_dir;
resources.runtime (minutes, optional: the time budget); threads (fvc.train.rule_arguments).
Exits 75 after a deliberate stop (SIGTERM/SIGUSR1 or the runtime budget minus
train.time_margin_s) with a checkpoint written, so Snakemake's retry resumes the fold.
"""

import sys

from fvc.log import setup_logging
from fvc.train import FoldInputs, FoldOutputs, FoldTarget, rule_arguments, run_fold

setup_logging(snakemake.log[0])
i, o = snakemake.input, snakemake.output
outputs = FoldOutputs(o.metrics, o.predictions, o.history, o.model, o.memory_log)
sys.exit(
    run_fold(
        FoldTarget(int(snakemake.params.fold), outputs),
        FoldInputs(i.clips, i.index, i.splits, i.aug_clips, i.aug_manifest),
        **rule_arguments(snakemake),
    )
)
