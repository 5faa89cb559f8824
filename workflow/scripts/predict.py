"""Rule `predict`: score one decoded predict set with the trained models.

input: clips, index, excluded (predict_data), models (each fold's best_model.pt, or the final
model), summary (summary.json: the out-of-fold threshold), predictions (the folds' out-of-fold
predictions: the threshold when summary.json has none), train_index (the training clips.parquet:
same decode settings); output: table (<name>.parquet), excluded (<name>_excluded.tsv), metrics
(<name>_metrics.json); params: name, model (ensemble | final), batch_size; threads: torch threads.
"""

import torch

from fvc.log import exit_on, setup_logging
from fvc.memory import aggressive_gc
from fvc.predict import PredictError, predict_set

setup_logging(snakemake.log[0])
torch.set_num_threads(max(1, snakemake.threads))
i, o = snakemake.input, snakemake.output
with exit_on("fvc.predict", PredictError):
    predict_set(
        snakemake.params.name,
        i.clips,
        i.index,
        i.excluded,
        list(i.models),
        i.summary,
        list(i.predictions),
        o.table,
        o.excluded,
        o.metrics,
        model_kind=snakemake.params.model,
        batch_size=int(snakemake.params.batch_size),
        train_index=i.train_index,
    )
aggressive_gc()
