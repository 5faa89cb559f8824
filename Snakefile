# Real/fake video classification with stratified K-fold cross-validation.
# Stages: make_demo (only without metadata) -> load_data -> preprocess -> split (per repeat)
#         -> augment (per fold) -> train (per variant and fold) -> aggregate -> plots
#         -> compare (with a `sweep`) -> provenance.
# Usage: `snakemake --cores all` (see README.md); `snakemake -n` lists what is left to do.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/cv.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/results.smk"
include: "workflow/rules/compare.smk"
include: "workflow/rules/provenance.smk"


# Trivial rules run inside the main Snakemake process, also on a cluster (no submit latency).
localrules:
    all,
    make_demo,
    split,
    aggregate,
    plots,
    compare,
    provenance,


rule all:
    default_target: True
    input:
        get_final_outputs(),
