# Usefulness: do the generations help? The study's segmentor recipe trained on generated, real + generated, few real
# + generated slices and on oracle renders (phantom), each scored on the real test split. Target: `usefulness`
# (in `all` with usefulness.in_all). Planning: segdiff.pipeline.plan (PLAN.usefulness_*).


wildcard_constraints:
    trainset="real|generated|real_generated|few_real|few_real_generated|oracle",
    part=r"\d+-of-\d+",


rule usefulness:
    input:
        PLAN.usefulness_outputs(),


rule sample_trainset:
    # one generation per train + val mask of one slice view, part i of n (sampling.chunks), as a slice store
    input:
        model=lambda w: PLAN.generator_model(w.modality, w.view),
        store="results/slices/{modality}/{view}/store",
    output:
        store=directory("results/usefulness/{modality}/generated/{view}/{part}"),
    log:
        "logs/usefulness/sample_{modality}_{view}_{part}.log",
    benchmark:
        "benchmarks/usefulness/sample_{modality}_{view}_{part}.tsv"
    conda:
        "../../envs/segdiff.yaml"
    threads: config["compute"]["sample_threads"]
    resources:
        mem_mb=PLAN.trainset_mem(),
        runtime=config["compute"]["train_runtime_min"],
        gpu=PLAN.job_gpus,
    params:
        sampling=trainset_params(config),  # sampler, steps, eta, spacing: not k, the batch or the chunks
        splits=config["segmentor"]["splits"],
        seed=config["seed"],
    script:
        "../scripts/sample_trainset.py"


rule oracle_trainset:
    # phantom only: one oracle render of every train + val case, with the real masks, one store per view
    input:
        stores=expand("results/slices/{{modality}}/{view}/store", view=VIEWS),
        labels=lambda w: list(usefulness_label_files(w).values()),
    output:
        stores=directory(expand("results/usefulness/{{modality}}/oracle/{view}", view=VIEWS)),
    log:
        "logs/usefulness/oracle_{modality}.log",
    benchmark:
        "benchmarks/usefulness/oracle_{modality}.tsv"
    conda:
        "../../envs/segdiff.yaml"
    threads: 1
    resources:
        mem_mb=config["compute"]["slice_mem_mb"],
        runtime=60,
    params:
        phantom=config["phantom"],
        seed=config["seed"],
        labels=config["dataset"]["labels"],
        splits=config["segmentor"]["splits"],
        preprocess=lambda w: preprocess_params(config, w.modality),
        label_files=usefulness_label_files,
    script:
        "../scripts/oracle_trainset.py"


use rule train_segmentor as train_segmentor_usefulness with:
    input:
        stores=lambda w: PLAN.usefulness_stores(w.modality, w.trainset),
        amos=amos_data,  # the few real cases come from the case table: after the AMOS22 download
    output:
        model="results/usefulness/{modality}/segmentor_{trainset}.pt",
        loss="results/usefulness/{modality}/segmentor_{trainset}_loss.csv",
    log:
        "logs/usefulness/train_{modality}_{trainset}.log",
    benchmark:
        "benchmarks/usefulness/train_{modality}_{trainset}.tsv"
    priority: 0
    params:
        checkpoint="checkpoints/usefulness/{modality}_{trainset}.ckpt",
        segmentor=segmentor_params(config),
        labels=config["dataset"]["labels"],
        seed=config["seed"],
        cases=lambda w: usefulness_cases(w),


rule score_usefulness:
    input:
        segmentor=lambda w: PLAN.usefulness_segmentor(w.modality, w.trainset),
        stores=expand("results/slices/{{modality}}/{view}/store", view=VIEWS),
    output:
        metrics="results/usefulness/{modality}/{trainset}/metrics.json",
        counts="results/usefulness/{modality}/{trainset}/counts.npz",
    log:
        "logs/usefulness/score_{modality}_{trainset}.log",
    conda:
        "../../envs/segdiff.yaml"
    threads: config["compute"]["sample_threads"]
    resources:
        mem_mb=config["compute"]["sample_mem_mb"],
        runtime=60,
        gpu=PLAN.job_gpus,
    params:
        labels=config["dataset"]["labels"],
    script:
        "../scripts/score_usefulness.py"


rule usefulness_table:
    input:
        metrics=PLAN.usefulness_metrics_files(),
    output:
        csv=report("results/usefulness/table.csv", caption="../report/usefulness.rst", category="5. Usefulness"),
        md="results/usefulness/table.md",
        long="results/usefulness/table_long.csv",
        figure=report(
            "results/figures/usefulness_dice_per_organ.png",
            caption="../report/usefulness.rst",
            category="5. Usefulness",
        ),
    log:
        "logs/usefulness/table.log",
    conda:
        "../../envs/segdiff.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        notes=lambda w: PLAN.usefulness_notes(),
    script:
        "../scripts/usefulness_table.py"
