#!/usr/bin/env bash
# Snakemake runs this inside the new conda environment (--sdm conda) after creating it: it
# installs this workflow's fvc package (editable, so the environment follows the checkout; its
# dependencies are the ones pinned in the environment file). FVC_SOURCE is the checkout, set
# by workflow/rules/common.smk while the workflow is parsed.
set -euo pipefail
python -m pip install --no-deps --no-build-isolation -e "${FVC_SOURCE:?FVC_SOURCE: the workflow checkout (set by common.smk)}"
