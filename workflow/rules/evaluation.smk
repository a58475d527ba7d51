# Stage 4: auxiliary segmentor, per-run evaluation, the comparison table, figures.


rule train_segmentor:
    input:
        stores=lambda w: expand("results/slices/{modality}/{view}/store", modality=w.modality, view=VIEWS),
    output:
        model="results/models/segmentor/{modality}.pt",
        loss="results/models/segmentor/{modality}_loss.csv",
    params:
        checkpoint="checkpoints/segmentor/{modality}.ckpt",
        segmentor=segmentor_params(config),
        labels=config["dataset"]["labels"],
        seed=config["seed"],
    log:
        "logs/segmentor/train_{modality}.log",
    benchmark:
        "benchmarks/segmentor/train_{modality}.tsv"
    threads: train_threads()
    priority: 5  # after the diffusion models (the longest jobs), before sampling
    resources:
        mem_mb=train_mem("segmentor", config["segmentor"]["train"]["batch_size"]),
        runtime=config["compute"]["train_runtime_min"],
        gpu=config["compute"]["gpus"],
    conda:
        "../../envs/segdiff.yaml"
    script:
        "../scripts/train_segmentor.py"


rule evaluate:
    input:
        unpack(evaluation_inputs),
    output:
        metrics="results/evaluation/{run}/metrics.json",
        arrays="results/evaluation/{run}/arrays.npz",
        per_slice="results/evaluation/{run}/per_slice.csv",
    params:
        label=lambda w: RUN_LABELS[w.run],
        labels=config["dataset"]["labels"],
        inception_weights=config["evaluation"]["inception_weights"],
        poster_inception_weights=config["evaluation"]["poster_inception_weights"],
        max_slices=config["evaluation"]["max_slices"],
        seed=config["seed"],
    log:
        "logs/evaluation/{run}.log",
    benchmark:
        "benchmarks/evaluation/{run}.tsv"
    threads: config["compute"]["sample_threads"]
    resources:
        mem_mb=evaluate_mem,
        runtime=60,
        gpu=JOB_GPUS,
    conda:
        "../../envs/segdiff.yaml"
    script:
        "../scripts/evaluate.py"


rule table:
    input:
        metrics=expand("results/evaluation/{run}/metrics.json", run=RUN_LABELS),
    output:
        csv=report("results/table.csv", caption="../report/table.rst", category="4. Evaluation"),
        md="results/table.md",
        tex="results/table.tex",
        long="results/table_long.csv",
    params:
        max_slices=config["evaluation"]["max_slices"],
    log:
        "logs/evaluation/table.log",
    resources:
        mem_mb=500,
        runtime=5,
    conda:
        "../../envs/segdiff.yaml"
    script:
        "../scripts/table.py"


rule evaluation_figures:
    input:
        metrics=expand("results/evaluation/{run}/metrics.json", run=RUN_LABELS),
        panel=generations_panel_inputs(),
        losses=loss_logs(),
    output:
        panel=report("results/figures/generations.png", caption="../report/generations_panel.rst", category="4. Evaluation"),
        dice=report("results/figures/dice_per_organ.png", caption="../report/dice_per_organ.rst", category="4. Evaluation"),
        metrics=report("results/figures/metrics_by_run.png", caption="../report/metrics_by_run.rst", category="4. Evaluation"),
        losses=report("results/figures/loss_curves.png", caption="../report/loss_curve.rst", category="2. Training"),
    params:
        labels=config["dataset"]["labels"],
    log:
        "logs/evaluation/figures.log",
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../../envs/segdiff.yaml"
    script:
        "../scripts/evaluation_figures.py"


rule oracle_figure:
    input:
        arrays=lambda w: f"results/evaluation/{ORACLE_FIGURE_RUNS[w.modality]}/arrays.npz",
    output:
        report("results/figures/oracle_vs_generated_{modality}.png", caption="../report/oracle_vs_generated.rst",
               category="4. Evaluation"),
    params:
        labels=config["dataset"]["labels"],
        title=lambda w: f"{RUN_LABELS[ORACLE_FIGURE_RUNS[w.modality]]}: oracle renders vs generations",
    log:
        "logs/evaluation/oracle_figure_{modality}.log",
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../../envs/segdiff.yaml"
    script:
        "../scripts/oracle_figure.py"


# Downloads pytorch-fid's FID Inception weights (segdiff.sources.weights known set "fid-inception"); the
# same as `python -m segdiff.sources.weights fetch fid-inception --dest PATH`. Not in `all`: needs a network.
rule fetch_inception_weights:
    output:
        config["evaluation"]["inception_weights"] or "resources/inception/pt_inception-2015-12-05-6726825d.pth",
    params:
        weights="fid-inception",
    log:
        "logs/fetch_inception_weights.log",
    resources:
        mem_mb=500,
        runtime=10,
    conda:
        "../../envs/segdiff.yaml"
    script:
        "../scripts/fetch_inception_weights.py"
