# Provenance: what produced this run (config, code version, environment, command line).
# Runs last (its inputs are all final results) and again whenever the code version changes
# (a param), so provenance.json always describes the latest run.


rule provenance:
    input:
        get_results_outputs(),
    output:
        report(
            f"{RUN}/provenance.json",
            caption="../report/provenance.rst",
            category="Provenance",
        ),
    log:
        f"{RUN}/logs/provenance.log",
    conda:
        "../../envs/data.yaml"
    params:
        code=CODE_VERSION,
        variants=get_variant_summary(),
    script:
        "../scripts/provenance.py"
