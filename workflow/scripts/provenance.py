"""Rule `provenance`: write provenance.json at the end of a run.

input: every final result (only to run last); output: provenance.json; params: code (git
commit, dirty flag, diff hash, read when Snakemake parsed the workflow), variants (overlay,
stage keys, trained_by per variant); env FVC_SNAKEMAKE_ARGV: Snakemake's command line (set by
common.smk in the main process; this rule is local, so it inherits it).
"""

import json
import os

from fvc.log import setup_logging
from fvc.provenance import write_provenance

setup_logging(snakemake.log[0])
write_provenance(
    snakemake.output[0],
    dict(snakemake.config),
    dict(snakemake.params.code),
    json.loads(os.environ.get("FVC_SNAKEMAKE_ARGV", "null")),
    variants=dict(snakemake.params.variants),
)
