# Training: one job per fold. Resume state lives in runs/<exp>/checkpoints/fold_<k>/, which is
# deliberately NOT an output: Snakemake deletes a failed job's outputs before a retry, and the
# retry must find the checkpoint to resume from.


rule train:
    input:
        clips=get_upstream(LAYOUT.path("decode", "data/clips.npy")),
        index=get_upstream(LAYOUT.path("decode", "data/clips.parquet")),
        splits=get_upstream(LAYOUT.split_path("splits.parquet")),
        aug_clips=get_upstream(LAYOUT.fold_path("augment", "augment/clips.npy")),
        aug_manifest=get_upstream(
            LAYOUT.fold_path("augment", "augment/manifest.parquet")
        ),
    output:
        metrics=LAYOUT.train_output("metrics.json"),
        predictions=LAYOUT.train_output("predictions.parquet"),
        history=LAYOUT.train_output("history.csv"),
        model=LAYOUT.train_output("best_model.pt"),
        memory_log=LAYOUT.train_output("memory.jsonl"),
    log:
        LAYOUT.fold_file("variant", "logs/train", ".log"),
    benchmark:
        LAYOUT.fold_file("variant", "benchmarks/train", ".tsv")
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        # one GPU per fold: `--resources gpu=N` runs at most N folds at once locally (each on its
        # own GPU through fvc.devices.claim_gpu_slot); the SLURM profile asks for gres gpu:1
        gpu=1,
        attempt=get_attempt,
    params:
        # only result-affecting keys: changing an operational one (x-operational in the schema,
        # e.g. train.num_workers) neither reruns a finished fold nor restarts a running one
        fold="{fold}",
        model=get_variant_section("model"),
        train=get_result_section("train"),
        memory=non_operational("memory"),
        checkpoint_dir=LAYOUT.fold_file("variant", "checkpoints"),
    script:
        "../scripts/train.py"
