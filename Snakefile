# Real/fake video classification with stratified K-fold cross-validation.
# Stages: make_demo (only without metadata) -> load_data -> preprocess -> split (per repeat)
#         -> augment (per fold) -> train (per variant and fold) -> aggregate -> plots,
#         memory_plot, benchmarks (per variant) -> compare (with a `sweep`) -> provenance;
#         predict_data -> predict (per predict set, the base variant's fold models);
#         with cv.outer_splits: outer_split -> per outer fold the inner CV of every variant
#         (split_inner .. aggregate_inner) -> nested_select -> refit_outer -> outer_test
#         -> nested_aggregate (README "Honest estimates").
# Not built by default: `snakemake refit` (the final model, runs/<exp>/final/model.pt).
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
include: "workflow/rules/predict.smk"
include: "workflow/rules/refit.smk"
include: "workflow/rules/nested.smk"
include: "workflow/rules/compare.smk"
include: "workflow/rules/provenance.smk"


# Trivial rules run inside the main Snakemake process, also on a cluster (no submit latency).
localrules:
    all,
    make_demo,
    split,
    aggregate,
    plots,
    memory_plot,
    benchmarks,
    predict_metrics,
    compare,
    provenance,
    outer_split,
    split_inner,
    aggregate_inner,
    nested_select,
    nested_aggregate,


rule all:
    default_target: True
    input:
        get_final_outputs(),
