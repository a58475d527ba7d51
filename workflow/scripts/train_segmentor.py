from segdiff.core.distributed import is_main_process, job_world_size
from segdiff.pipeline.job_params import speed_settings
from segdiff.core.labels import load_label_map
from segdiff.data.loader import loader_settings
from segdiff.pipeline.runtime import run_script
from segdiff.models.segmentor import SegmentorConfig, fit_segmentor, save_segmentor
from segdiff.data.store import SliceStore
from segdiff.core.device import pick_device, use_bf16
from segdiff.models.training import TrainSettings, write_history


def main():
    # params: what shapes the model (reruns when it changes); speed and placement come from the config
    p, modality, compute = snakemake.params, snakemake.wildcards.modality, snakemake.config["compute"]
    labels = load_label_map(p.labels)
    device = pick_device(compute["device"])
    slices = SliceStore(snakemake.input.stores, p.segmentor["splits"])
    config = SegmentorConfig(num_classes=labels.max_id + 1, **p.segmentor["model"])
    train = {**p.segmentor["train"], **speed_settings(snakemake.config, "segmentor.train")}
    batch_size, augmentation = train.pop("batch_size"), train.pop("augment")
    result = fit_segmentor(slices, config, TrainSettings(seed=p.seed, bf16=use_bf16(compute["precision"], device), **train), batch_size,
                           p.checkpoint, device, desc=f"segmentor {modality}", augmentation=augmentation,
                           loader=loader_settings(compute, device), world_size=job_world_size(compute),
                           resume_key={"labels": labels.names})
    if not is_main_process():  # a rank under torchrun: rank 0 writes the outputs
        return
    save_segmentor(snakemake.output.model, result.ema, config,
                   {"modality": modality, "train_slices": len(slices), "splits": p.segmentor["splits"]})
    write_history(result.history, snakemake.output.loss)


run_script(snakemake, main)
