# Training: one job per fold. Resume state lives in runs/<exp>/checkpoints/fold_<k>/, which is
# deliberately NOT an output: Snakemake deletes a failed job's outputs before a retry, and the
# retry must find the checkpoint to resume from.


rule train:
    input:
        clips=get_upstream("decode", "data/clips.npy"),
        index=get_upstream("decode", "data/clips.parquet"),
        splits=get_upstream("split", "splits.parquet"),
        aug_clips=get_upstream("augment", "augment/clips.npy", fold_level=True),
        aug_manifest=get_upstream(
            "augment", "augment/manifest.parquet", fold_level=True
        ),
    output:
        metrics=get_train_output("metrics.json"),
        predictions=get_train_output("predictions.parquet"),
        history=get_train_output("history.csv"),
        model=get_train_output("best_model.pt"),
        memory_log=get_train_output("memory.jsonl"),
    log:
        get_fold_file("variant", "logs/train", ".log"),
    benchmark:
        get_fold_file("variant", "benchmarks/train", ".tsv")
    conda:
        "../../envs/torch.yaml"
    threads: 1
    params:
        fold="{fold}",
        model=get_variant_section("model"),
        train=get_variant_section("train"),
        memory=config["memory"],
        checkpoint_dir=get_fold_file("variant", "checkpoints"),
    script:
        "../scripts/train.py"
