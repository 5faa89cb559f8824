# Data stages: demo generation, metadata loading/probing, one-time decoding into a clip cache.


rule make_demo:
    output:
        metadata=f"{DEMO_DIR}/metadata.csv",
    log:
        f"{DEMO_DIR}/make_demo.log",
    conda:
        "../../envs/data.yaml"
    params:
        demo=config["data"]["demo"],
    script:
        "../scripts/make_demo.py"


rule load_data:
    input:
        metadata=get_metadata_source(),
        inventory=get_dataset_inventory(),
    output:
        metadata=f"{RUN}/data/metadata.parquet",
        excluded=f"{RUN}/data/excluded.tsv",
    log:
        f"{RUN}/logs/load_data.log",
    benchmark:
        f"{RUN}/benchmarks/load_data.tsv"
    conda:
        "../../envs/data.yaml"
    threads: config["data"]["workers"]
    params:
        data=load_params(),
        min_per_class=config["cv"]["n_splits"],
    script:
        "../scripts/load_data.py"


rule preprocess:
    input:
        metadata=rules.load_data.output.metadata,
    output:
        clips=f"{RUN}/data/clips.npy",
        index=f"{RUN}/data/clips.parquet",
        excluded=f"{RUN}/data/decode_excluded.tsv",
    log:
        f"{RUN}/logs/preprocess.log",
    benchmark:
        f"{RUN}/benchmarks/preprocess.tsv"
    conda:
        "../../envs/data.yaml"
    threads: config["data"]["workers"]
    params:
        data=decode_params(),
        cache=get_cache_dir("decode"),
    script:
        "../scripts/preprocess.py"
