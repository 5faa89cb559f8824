"""Rule `train`: train fold k, resuming from its checkpoint directory, and publish its outputs.

input: clips, index, splits, aug_clips, aug_manifest; output: metrics, predictions, history,
model, memory_log; params: fold (int), model, train, memory (the result-affecting keys of those
config sections; the operational keys come from snakemake.config), checkpoint_dir;
resources.runtime (minutes, optional: the time budget); threads.
Exits 75 after a deliberate stop (SIGTERM/SIGUSR1 or the runtime budget minus
train.time_margin_s) with a checkpoint written, so Snakemake's retry resumes the fold.
"""

import sys

from fvc.log import setup_logging
from fvc.train import FoldInputs, FoldOutputs, FoldTarget, run_fold

setup_logging(snakemake.log[0])
i, o, p, cfg = snakemake.input, snakemake.output, snakemake.params, snakemake.config
sys.exit(
    run_fold(
        FoldTarget(
            int(p.fold), FoldOutputs(o.metrics, o.predictions, o.history, o.model, o.memory_log)
        ),
        FoldInputs(i.clips, i.index, i.splits, i.aug_clips, i.aug_manifest),
        dict(p.model),
        {**cfg["train"], **p.train},
        {**cfg["memory"], **p.memory},
        p.checkpoint_dir,
        runtime_min=getattr(snakemake.resources, "runtime", None),
        threads=snakemake.threads,
    )
)
