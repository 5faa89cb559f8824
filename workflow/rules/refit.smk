# The final model (`snakemake refit`): trained on every usable video for the median of the
# folds' best epochs (src/fvc/refit.py). Not part of `rule all`: built only when asked for, by
# the rule name or by its output runs/<exp>/final/model.pt. Resume state lives in
# runs/<exp>/checkpoints/final/ (deliberately NOT an output, as for train). The final model is
# the base variant's: its decoded clips, its repeat-0 splits (every usable video) and folds.


rule augment_final:
    input:
        clips=LAYOUT.fill(LAYOUT.path("decode", "data/clips.npy"), BASE),
        splits=LAYOUT.split_files(BASE)[0],
    output:
        clips=LAYOUT.final_path("augment/clips.npy"),
        manifest=LAYOUT.final_path("augment/manifest.parquet"),
    log:
        f"{RUN}/logs/augment/final.log",
    benchmark:
        f"{RUN}/benchmarks/augment/final.tsv"
    conda:
        "../../envs/torch.yaml"
    params:
        # every video of splits.parquet gets augment.copies copies (as each fold's training
        # videos do): fold "all" = no fold held out
        fold="all",
        augment=config["augment"],
    script:
        "../scripts/augment.py"


rule refit:
    input:
        unpack(get_refit_inputs),
    output:
        model=LAYOUT.final_path("model.pt"),
        history=LAYOUT.final_path("history.csv"),
        memory_log=LAYOUT.final_path("memory.jsonl"),
        info=LAYOUT.final_path("refit.json"),
    log:
        f"{RUN}/logs/refit.log",
    benchmark:
        f"{RUN}/benchmarks/refit.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        # like train: one GPU (a local slot, or the SLURM profile's gpu:1)
        gpu=1,
        attempt=get_attempt,
    params:
        # as for train: only result-affecting keys, the operational ones come from the config
        model=config["model"],
        train=non_operational("train"),
        memory=non_operational("memory"),
        checkpoint_dir=f"{RUN}/checkpoints/final",
    script:
        "../scripts/refit.py"
