"""Rule `predict_data`: read, probe and decode one predict set exactly like the training set.

input: metadata (the set's table, list or folder), inventory (its videos' stat list, only there
to rerun this rule when a video changes); output: metadata, clips, index, excluded (probe and
decode failures with their reasons); params: name, spec ({metadata, root, format}), data (the
training's decode settings + label keys), cache (the set's decode cache: unchanged videos are
not decoded again); threads: decoder processes.
A bad table logs a one-line error naming predict.sets.<name> and exits 1, writing nothing.
"""

from fvc.data import DataError
from fvc.log import exit_on, setup_logging
from fvc.memory import aggressive_gc
from fvc.predict import PredictError, SetFiles, prepare_predict_set

setup_logging(snakemake.log[0])
o = snakemake.output
with exit_on("fvc.predict", DataError, PredictError):
    prepare_predict_set(
        snakemake.params.name,
        dict(snakemake.params.spec),
        dict(snakemake.params.data),
        SetFiles(o.metadata, o.clips, o.index, o.excluded),
        workers=snakemake.threads,
        cache_dir=snakemake.params.cache,
    )
aggressive_gc()
