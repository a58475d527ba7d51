# Stage 4: auxiliary segmentor, per-run evaluation, the comparison table, figures.


rule train_segmentor:
    input:
        stores=lambda w: expand("results/slices/{modality}/{view}/store", modality=w.modality, view=VIEWS),
    output:
        model="results/models/segmentor/{modality}.pt",
        loss="results/models/segmentor/{modality}_loss.csv",
    log:
        "logs/segmentor/train_{modality}.log",
    benchmark:
        "benchmarks/segmentor/train_{modality}.tsv"
    priority: 5  # after the diffusion models (the longest jobs), before sampling
    conda:
        "../../envs/segdiff.yaml"
    threads: PLAN.train_threads
    resources:
        mem_mb=PLAN.train_mem("segmentor"),
        runtime=config["compute"]["train_runtime_min"],
        gpu=config["compute"]["gpus"],
    params:
        checkpoint="checkpoints/segmentor/{modality}.ckpt",
        segmentor=segmentor_params(config),
        labels=config["dataset"]["labels"],
        seed=config["seed"],
    script:
        "../scripts/train_segmentor.py"


rule evaluate:
    input:
        unpack(evaluation_inputs),
    output:
        metrics="results/evaluation/{run}/metrics.json",
        arrays="results/evaluation/{run}/arrays.npz",
        per_slice="results/evaluation/{run}/per_slice.csv",
    log:
        "logs/evaluation/{run}.log",
    benchmark:
        "benchmarks/evaluation/{run}.tsv"
    conda:
        "../../envs/segdiff.yaml"
    threads: config["compute"]["sample_threads"]
    resources:
        mem_mb=lambda w: PLAN.evaluate_mem(w.run),
        runtime=60,
        gpu=PLAN.job_gpus,
    params:
        label=lambda w: PLAN.run_labels[w.run],
        labels=config["dataset"]["labels"],
        inception_weights=config["evaluation"]["inception_weights"],
        poster_inception_weights=config["evaluation"]["poster_inception_weights"],
        max_slices=config["evaluation"]["max_slices"],
        seed=config["seed"],
    script:
        "../scripts/evaluate.py"


rule table:
    input:
        metrics=PLAN.metrics_files(),
    output:
        csv=report("results/table.csv", caption="../report/table.rst", category="4. Evaluation"),
        md="results/table.md",
        tex="results/table.tex",
        long="results/table_long.csv",
    log:
        "logs/evaluation/table.log",
    conda:
        "../../envs/segdiff.yaml"
    resources:
        mem_mb=500,
        runtime=5,
    params:
        max_slices=config["evaluation"]["max_slices"],
    script:
        "../scripts/table.py"


rule evaluation_figures:
    input:
        metrics=PLAN.metrics_files(),
        panel=PLAN.generations_panel_inputs(),
        losses=PLAN.loss_logs(),
    output:
        panel=report(
            "results/figures/generations.png", caption="../report/generations_panel.rst", category="4. Evaluation"
        ),
        dice=report(
            "results/figures/dice_per_organ.png", caption="../report/dice_per_organ.rst", category="4. Evaluation"
        ),
        metrics=report(
            "results/figures/metrics_by_run.png", caption="../report/metrics_by_run.rst", category="4. Evaluation"
        ),
        losses=report("results/figures/loss_curves.png", caption="../report/loss_curve.rst", category="2. Training"),
    log:
        "logs/evaluation/figures.log",
    conda:
        "../../envs/segdiff.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        labels=config["dataset"]["labels"],
    script:
        "../scripts/evaluation_figures.py"


rule oracle_figure:
    input:
        arrays=lambda w: f"results/evaluation/{PLAN.oracle_figure_runs[w.modality]}/arrays.npz",
    output:
        report(
            "results/figures/oracle_vs_generated_{modality}.png",
            caption="../report/oracle_vs_generated.rst",
            category="4. Evaluation",
        ),
    log:
        "logs/evaluation/oracle_figure_{modality}.log",
    conda:
        "../../envs/segdiff.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        labels=config["dataset"]["labels"],
        title=lambda w: f"{PLAN.run_labels[PLAN.oracle_figure_runs[w.modality]]}: oracle renders vs generations",
    script:
        "../scripts/oracle_figure.py"


# Downloads pytorch-fid's FID Inception weights (segdiff.sources.weights known set "fid-inception"); the
# same as `segdiff weights fetch fid-inception --dest PATH`. Not in `all`: needs a network.
rule fetch_inception_weights:
    output:
        config["evaluation"]["inception_weights"] or "resources/inception/pt_inception-2015-12-05-6726825d.pth",
    log:
        "logs/fetch_inception_weights.log",
    conda:
        "../../envs/segdiff.yaml"
    resources:
        mem_mb=500,
        runtime=10,
    params:
        weights="fid-inception",
    script:
        "../scripts/fetch_inception_weights.py"
