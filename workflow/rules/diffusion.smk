# Stage 2-3: segmentation-guided diffusion per modality x view, then batched sampling.


rule train_diffusion:
    input:
        stores=run_stores,
    output:
        model="results/models/diffusion/{modality}_{view}.pt",
        loss="results/models/diffusion/{modality}_{view}_loss.csv",
        figure=report(
            "results/figures/loss/diffusion_{modality}_{view}.png",
            caption="../report/loss_curve.rst",
            category="2. Training",
        ),
    log:
        "logs/diffusion/train_{modality}_{view}.log",
    benchmark:
        "benchmarks/diffusion/train_{modality}_{view}.tsv"
    priority: 10  # the longest jobs of the study: start them first
    conda:
        "../../envs/segdiff.yaml"
    threads: PLAN.train_threads
    resources:
        mem_mb=PLAN.train_mem("diffusion"),
        runtime=config["compute"]["train_runtime_min"],
        gpu=config["compute"]["gpus"],
    params:
        **BODY_PARAMS,  # the body envelope's mask channel (preprocess.body)
        checkpoint="checkpoints/diffusion/{modality}_{view}.ckpt",
        diffusion=diffusion_params(config),  # what shapes the model: not the list of runs, no speed keys
        labels=config["dataset"]["labels"],
        seed=config["seed"],
    script:
        "../scripts/train_diffusion.py"


# Sampling is scattered over sampling.chunks jobs per run (Snakemake's scattergather; `--set-scatter
# sample=N` overrides it): chunk i-of-n samples part i of the run's test subset (segdiff.sampling.chunks.chunk_bounds)
# into a temporary chunk file, and the gather job merges the parts into the files the evaluation reads,
# equal to one job's. With chunks 1: one sampling job and a light gather.
scattergather:
    sample=config["sampling"]["chunks"],


rule sample_diffusion:
    input:
        model="results/models/diffusion/{modality}_{view}.pt",
        stores=run_stores,
    output:
        part=temp("results/samples/{modality}_{view}/chunks/multi_inference_{scatteritem}.npz"),
    log:
        "logs/diffusion/sample_{modality}_{view}_{scatteritem}.log",
    benchmark:
        "benchmarks/diffusion/sample_{modality}_{view}_{scatteritem}.tsv"
    conda:
        "../../envs/segdiff.yaml"
    threads: config["compute"]["sample_threads"]
    resources:
        mem_mb=lambda w: PLAN.sample_mem(mask_modality(w), w.view, w.scatteritem),
        runtime=config["compute"]["train_runtime_min"],
        gpu=PLAN.job_gpus,
    params:
        sampling=sampling_params(config),  # sampler, steps, eta, k: not the batch, chunks or multi-modal runs
        max_slices=config["evaluation"]["max_slices"],
        seed=config["seed"],
        mode="multi_inference",
    script:
        "../scripts/sample_chunk.py"


use rule sample_diffusion as sample_multimodal with:
    output:
        part=temp("results/samples/{source}2{modality}_{view}/chunks/multimodal_{scatteritem}.npz"),
    log:
        "logs/diffusion/sample_{source}2{modality}_{view}_{scatteritem}.log",
    benchmark:
        "benchmarks/diffusion/sample_{source}2{modality}_{view}_{scatteritem}.tsv"
    params:
        sampling=sampling_params(config),  # sampler, steps, eta, k: not the batch, chunks or multi-modal runs
        max_slices=config["evaluation"]["max_slices"],
        seed=config["seed"],
        mode="multimodal",
        min_foreground=config["preprocess"]["min_foreground"],  # source slices left with fewer organ pixels are dropped


rule gather_samples:
    input:
        parts=gather.sample("results/samples/{{modality}}_{{view}}/chunks/multi_inference_{scatteritem}.npz"),
    output:
        samples="results/samples/{modality}_{view}/multi_inference.npz",
        grid=report(
            "results/samples/{modality}_{view}/multi_inference.png",
            caption="../report/generations.rst",
            category="3. Generations",
        ),
        reconstruction="results/samples/{modality}_{view}/reconstruction.npz",
        reconstruction_grid=report(
            "results/samples/{modality}_{view}/reconstruction.png",
            caption="../report/generations.rst",
            category="3. Generations",
        ),
    log:
        "logs/diffusion/gather_{modality}_{view}.log",
    conda:
        "../../envs/segdiff.yaml"
    threads: 1
    resources:
        mem_mb=lambda w: PLAN.gather_mem(mask_modality(w), w.view),
        runtime=15,
    params:
        labels=config["dataset"]["labels"],
    script:
        "../scripts/gather_samples.py"


use rule gather_samples as gather_multimodal with:
    input:
        parts=gather.sample("results/samples/{{source}}2{{modality}}_{{view}}/chunks/multimodal_{scatteritem}.npz"),
    output:
        samples="results/samples/{source}2{modality}_{view}/multimodal.npz",
        grid=report(
            "results/samples/{source}2{modality}_{view}/multimodal.png",
            caption="../report/generations.rst",
            category="3. Generations",
        ),
    log:
        "logs/diffusion/gather_{source}2{modality}_{view}.log",
