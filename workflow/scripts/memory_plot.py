"""Rule memory_plot: each fold's memory timeline (memory.jsonl) as one figure."""

from fvc.log import setup_logging
from fvc.plots import memory_figure, save

setup_logging(snakemake.log[0])
save(memory_figure(list(snakemake.input.memory)), snakemake.output.png)
