"""Rule benchmarks: every job's run time and peak memory from the benchmark: files."""

from fvc.log import setup_logging
from fvc.plots import write_benchmarks

setup_logging(snakemake.log[0])
write_benchmarks(
    list(snakemake.input.benchmarks),
    snakemake.output.png,
    snakemake.output.table,
)
