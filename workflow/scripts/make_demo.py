"""Rule `make_demo`: generate the offline demo dataset (videos, then metadata.csv last).

input: none; output: metadata (CSV, videos go to <its folder>/videos/); params: demo (data.demo).
"""

from fvc.demo import make_demo_dataset
from fvc.log import setup_logging
from fvc.memory import aggressive_gc

setup_logging(snakemake.log[0])
make_demo_dataset(snakemake.output.metadata, dict(snakemake.params.demo))
aggressive_gc()
