"""Rule plots: ROC curves and training curves for the Snakemake report."""

from fvc.log import setup_logging
from fvc.memory import aggressive_gc
from fvc.report import plot_roc_curves, plot_training_curves

setup_logging(snakemake.log[0])
plot_roc_curves(list(snakemake.input.predictions), snakemake.output.roc)
plot_training_curves(list(snakemake.input.histories), snakemake.output.curves)
aggressive_gc()
