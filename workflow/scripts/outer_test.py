"""Rule outer_test: the selected variant's refit model scored once on the outer test part.

input: model, clips, index, outer_splits, selection, summary (the selected variant's inner
summary.json: its threshold); output: predictions, metrics; params: batch_size; threads.
"""

import torch

from fvc.log import exit_on, setup_logging
from fvc.memory import aggressive_gc
from fvc.nested import NestedError, score_outer_test

setup_logging(snakemake.log[0])
torch.set_num_threads(max(1, snakemake.threads))
i, o = snakemake.input, snakemake.output
with exit_on("fvc.nested", NestedError):
    score_outer_test(
        i.model,
        i.clips,
        i.index,
        i.outer_splits,
        i.selection,
        i.summary,
        o.predictions,
        o.metrics,
        batch_size=int(snakemake.params.batch_size),
    )
aggressive_gc()
