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
    params:
        checkpoint="checkpoints/diffusion/{modality}_{view}.ckpt",
        diffusion=config["diffusion"],
        labels=config["dataset"]["labels"],
        device=config["compute"]["device"],
        precision=config["compute"]["precision"],
        seed=config["seed"],
        loader=COMPUTE,
    log:
        "logs/diffusion/train_{modality}_{view}.log",
    benchmark:
        "benchmarks/diffusion/train_{modality}_{view}.tsv"
    threads: config["compute"]["train_threads"]
    priority: 10  # the longest jobs of the study: start them first
    resources:
        mem_mb=train_mem("diffusion", config["diffusion"]["train"]["batch_size"]),
        runtime=config["compute"]["train_runtime_min"],
        gpu=config["compute"]["gpus"],
    conda:
        "../../envs/segdiff.yaml"
    script:
        "../scripts/train_diffusion.py"


rule sample_diffusion:
    input:
        model="results/models/diffusion/{modality}_{view}.pt",
        stores=run_stores,
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
    params:
        sampling=config["sampling"],
        max_slices=config["evaluation"]["max_slices"],
        labels=config["dataset"]["labels"],
        device=config["compute"]["device"],
        precision=config["compute"]["precision"],
        seed=config["seed"],
        mode="multi_inference",
    log:
        "logs/diffusion/sample_{modality}_{view}.log",
    benchmark:
        "benchmarks/diffusion/sample_{modality}_{view}.tsv"
    threads: config["compute"]["sample_threads"]
    resources:
        mem_mb=sample_mem,
        runtime=config["compute"]["train_runtime_min"],
        gpu=config["compute"]["gpus"],
    conda:
        "../../envs/segdiff.yaml"
    script:
        "../scripts/sample_diffusion.py"


use rule sample_diffusion as sample_multimodal with:
    output:
        samples="results/samples/{source}2{modality}_{view}/multimodal.npz",
        grid=report(
            "results/samples/{source}2{modality}_{view}/multimodal.png",
            caption="../report/generations.rst",
            category="3. Generations",
        ),
    params:
        sampling=config["sampling"],
        max_slices=config["evaluation"]["max_slices"],
        labels=config["dataset"]["labels"],
        device=config["compute"]["device"],
        precision=config["compute"]["precision"],
        seed=config["seed"],
        mode="multimodal",
    log:
        "logs/diffusion/sample_{source}2{modality}_{view}.log",
    benchmark:
        "benchmarks/diffusion/sample_{source}2{modality}_{view}.tsv"
