# Stage 1: volumes -> case table -> NPZ slice shards (+ PNG previews) -> manifests + slice stores -> preview figure.


rule phantom:
    output:
        images=phantom_files("image"),
        labels=phantom_files("label"),
        dataset=f"{PHANTOM_ROOT}/dataset.json",
    log:
        "logs/phantom.log",
    conda:
        "../../envs/segdiff.yaml"
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        seed=config["seed"],
        phantom=config["phantom"],
    script:
        "../scripts/phantom.py"


if AMOS:

    checkpoint amos_download:
        # Target rule (not in `all`): AMOS22 from Zenodo, license and citation logged first, resumable,
        # md5-verified, unpacked without zip-slip; nothing happens when amos_root holds dataset.json.
        output:
            directory(AMOS_ROOT),
        log:
            "logs/data/amos_download.log",
        conda:
            "../../envs/segdiff.yaml"
        resources:
            mem_mb=1000,
            runtime=12 * 60,
        params:
            **config["dataset"]["amos_download"],
        script:
            "../scripts/amos_download.py"


rule cases:
    input:
        amos_data,
    output:
        "results/data/cases.tsv",
    log:
        "logs/cases.log",
    conda:
        "../../envs/segdiff.yaml"
    resources:
        mem_mb=500,
        runtime=5,
    params:
        cases=lambda w: case_table().to_dict("records"),
    script:
        "../scripts/cases.py"


rule totalvibe_mask:
    # dataset.mask_source totalvibe: TotalVibeSegmentator's labels of one image volume, on its grid (they
    # replace the sheet's label column; weights checked before any job, see common.smk)
    input:
        image=lambda w: case_table().loc[w.case, "image"],
    output:
        TOTALVIBE_MASK,
    log:
        "logs/masks/totalvibe/{case}.log",
    benchmark:
        "benchmarks/masks/totalvibe/{case}.tsv"
    priority: 20
    conda:
        "../../envs/totalvibe.yaml"
    threads: config["compute"]["sample_threads"]
    resources:
        mem_mb=config["compute"]["mask_mem_mb"],
        runtime=60,
        gpu=PLAN.job_gpus,
    script:
        "../scripts/totalvibe_mask.py"


rule slice_case:
    input:
        unpack(case_input),
    output:
        shards=shard_outputs(),
        previews=directory(expand("results/slices/{{modality}}/{view}/previews/{{case}}", view=VIEWS)),
    log:
        "logs/slices/{modality}/{case}.log",
    benchmark:
        "benchmarks/slices/{modality}/{case}.tsv"
    priority: 20  # everything waits for the slices: finish them before any model job starts
    conda:
        "../../envs/segdiff.yaml"
    threads: 1
    resources:
        mem_mb=config["compute"]["slice_mem_mb"],
        runtime=20,
    params:
        labels=config["dataset"]["labels"],
        remap=config["dataset"]["remap"],
        preprocess=lambda w: preprocess_params(config, w.modality),  # not the other modality's intensities
    script:
        "../scripts/slice_case.py"


rule manifest:
    input:
        shards_of,
    output:
        manifest="results/slices/{modality}/{view}/manifest.tsv",
        store=directory("results/slices/{modality}/{view}/store"),
    log:
        "logs/slices/{modality}/{view}/manifest.log",
    wildcard_constraints:
        view="axial|coronal|sagittal",
    priority: 20
    conda:
        "../../envs/segdiff.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        rows=manifest_rows,
    script:
        "../scripts/manifest.py"


rule preview_figure:
    input:
        manifests=PLAN.manifests(),
    output:
        report(
            "results/figures/slices_preview.png",
            caption="../report/slices_preview.rst",
            category="1. Data",
        ),
    log:
        "logs/figures/slices_preview.log",
    conda:
        "../../envs/segdiff.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        labels=config["dataset"]["labels"],
    script:
        "../scripts/preview_figure.py"


rule provenance:
    output:
        "results/provenance.json",
    log:
        "logs/provenance.log",
    conda:
        "../../envs/segdiff.yaml"
    resources:
        mem_mb=500,
        runtime=5,
    params:
        config=recorded_config(config),  # without speed keys: a memory request rewrites nothing
        repo=str(REPO),
    script:
        "../scripts/provenance.py"


rule oracle_case:
    # Phantom only: k fresh acquisitions of a test case's anatomy (ground truth of p(image | mask)).
    input:
        unpack(oracle_input),
    output:
        renders=expand("results/oracle/{{contrast}}/{view}/{{case}}.npz", view=VIEWS),
    log:
        "logs/oracle/{contrast}/{case}.log",
    benchmark:
        "benchmarks/oracle/{contrast}/{case}.tsv"
    conda:
        "../../envs/segdiff.yaml"
    threads: 1
    resources:
        mem_mb=config["compute"]["slice_mem_mb"],
        runtime=20,
    params:
        phantom=config["phantom"],
        seed=config["seed"],
        k=config["sampling"]["k"],
        labels=config["dataset"]["labels"],
        preprocess=oracle_preprocess,  # the contrast's; the body envelope of the case's modality
    script:
        "../scripts/oracle.py"
