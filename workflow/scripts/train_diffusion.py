from segdiff.models.diffusion import DenoiserConfig, SchedulerConfig, fit_diffusion, save_diffusion
from segdiff.core.distributed import is_main_process, job_world_size
from segdiff.report.figures import loss_curve_figure
from segdiff.pipeline.job_params import speed_settings
from segdiff.core.labels import load_label_map
from segdiff.data.loader import loader_settings
from segdiff.pipeline.runtime import run_script
from segdiff.data.store import SliceStore
from segdiff.core.device import pick_device, use_bf16
from segdiff.models.training import TrainSettings, write_history


def main():
    # params: what shapes the model (reruns when it changes); speed and placement come from the config
    p, w, compute = snakemake.params, snakemake.wildcards, snakemake.config["compute"]
    cfg = p.diffusion
    labels = load_label_map(p.labels)
    slices = SliceStore(snakemake.input.stores, ["train"])
    device = pick_device(compute["device"])
    denoiser = DenoiserConfig(num_classes=labels.max_id + 1, conditioning=cfg["conditioning"], **cfg["model"])
    scheduler = SchedulerConfig(**cfg["scheduler"])
    train = {**cfg["train"], **speed_settings(snakemake.config, "diffusion.train")}
    batch_size = train.pop("batch_size")
    result = fit_diffusion(slices, denoiser, scheduler, TrainSettings(seed=p.seed, bf16=use_bf16(compute["precision"], device), **train),
                           batch_size, p.checkpoint, device, cfg["ablation_p"], desc=f"diffusion {w.modality}/{w.view}",
                           loader=loader_settings(compute, device), world_size=job_world_size(compute),
                           resume_key={"labels": labels.names})
    if not is_main_process():  # a rank under torchrun: rank 0 writes the outputs
        return
    meta = {"modality": w.modality, "view": w.view, "train_slices": len(slices), "labels": labels.names, "seed": p.seed,
            "classes_seen": slices.classes}
    save_diffusion(snakemake.output.model, result.ema, scheduler, meta)
    write_history(result.history, snakemake.output.loss)
    loss_curve_figure({f"{w.modality} {w.view}": snakemake.output.loss}, snakemake.output.figure, "diffusion training loss")


run_script(snakemake, main)
