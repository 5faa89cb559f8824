"""Rule plots: ROC, precision-recall, calibration, confusion matrix and training curves."""

from fvc.log import setup_logging
from fvc.memory import aggressive_gc
from fvc.plots import write_report_plots

setup_logging(snakemake.log[0])
write_report_plots(
    list(snakemake.input.predictions),
    list(snakemake.input.histories),
    snakemake.input.summary,
    dict(snakemake.output.items()),
)
aggressive_gc()
