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
        metadata=get_metadata_source,
        inventory=get_dataset_inventory,
    output:
        metadata=get_path("load", "data/metadata.parquet"),
        excluded=get_path("load", "data/excluded.tsv"),
    log:
        get_path("load", "logs/load_data.log"),
    benchmark:
        get_path("load", "benchmarks/load_data.tsv")
    conda:
        "../../envs/data.yaml"
    threads: config["data"]["workers"]
    params:
        data=load_params,
        min_per_class=config["cv"]["n_splits"],
    script:
        "../scripts/load_data.py"


rule preprocess:
    input:
        metadata=get_upstream("load", "data/metadata.parquet"),
    output:
        clips=get_path("decode", "data/clips.npy"),
        index=get_path("decode", "data/clips.parquet"),
        excluded=get_path("decode", "data/decode_excluded.tsv"),
    log:
        get_path("decode", "logs/preprocess.log"),
    benchmark:
        get_path("decode", "benchmarks/preprocess.tsv")
    conda:
        "../../envs/data.yaml"
    threads: config["data"]["workers"]
    params:
        data=decode_params,
        cache=get_cache_dir("decode", "decode"),
    script:
        "../scripts/preprocess.py"
