# Training: one job per fold. Resume state lives in runs/<exp>/checkpoints/fold_<k>/, which is
# deliberately NOT an output: Snakemake deletes a failed job's outputs before a retry, and the
# retry must find the checkpoint to resume from.


rule train:
    input:
        clips=rules.preprocess.output.clips,
        index=rules.preprocess.output.index,
        splits=rules.split.output.splits,
        aug_clips=rules.augment.output.clips,
        aug_manifest=rules.augment.output.manifest,
    output:
        metrics=f"{RUN}/fold_{{fold}}/metrics.json",
        predictions=f"{RUN}/fold_{{fold}}/predictions.parquet",
        history=f"{RUN}/fold_{{fold}}/history.csv",
        model=f"{RUN}/fold_{{fold}}/best_model.pt",
        memory_log=f"{RUN}/fold_{{fold}}/memory.jsonl",
    log:
        f"{RUN}/logs/train/fold_{{fold}}.log",
    benchmark:
        f"{RUN}/benchmarks/train/fold_{{fold}}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        # one GPU per fold: `--resources gpu=N` runs at most N folds at once locally (each on its
        # own GPU through fvc.devices.claim_gpu_slot); the SLURM profile asks for gres gpu:1
        gpu=1,
    params:
        # only result-affecting keys: changing an operational one (x-operational in the schema,
        # e.g. train.num_workers) neither reruns a finished fold nor restarts a running one
        fold="{fold}",
        model=config["model"],
        train=non_operational("train"),
        memory=non_operational("memory"),
        checkpoint_dir=f"{RUN}/checkpoints/fold_{{fold}}",
    script:
        "../scripts/train.py"
