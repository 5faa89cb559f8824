# Data stages: demo generation, metadata loading/probing, one-time decoding into a clip cache.


rule make_demo:
    output:
        metadata=f"{LAYOUT.demo_dir}/metadata.csv",
    log:
        f"{LAYOUT.demo_dir}/make_demo.log",
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
        metadata=LAYOUT.path("load", "data/metadata.parquet"),
        excluded=LAYOUT.path("load", "data/excluded.tsv"),
    log:
        LAYOUT.path("load", "logs/load_data.log"),
    benchmark:
        LAYOUT.path("load", "benchmarks/load_data.tsv")
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
        metadata=get_upstream(LAYOUT.path("load", "data/metadata.parquet")),
    output:
        clips=LAYOUT.path("decode", "data/clips.npy"),
        index=LAYOUT.path("decode", "data/clips.parquet"),
        excluded=LAYOUT.path("decode", "data/decode_excluded.tsv"),
    log:
        LAYOUT.path("decode", "logs/preprocess.log"),
    benchmark:
        LAYOUT.path("decode", "benchmarks/preprocess.tsv")
    conda:
        "../../envs/data.yaml"
    threads: config["data"]["workers"]
    params:
        data=decode_params,
        cache=LAYOUT.cache_dir("decode", "decode"),
    script:
        "../scripts/preprocess.py"
