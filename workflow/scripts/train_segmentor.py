from segdiff.distributed import is_main_process, job_world_size
from segdiff.labels import load_label_map
from segdiff.loader import loader_settings
from segdiff.runtime import run_script
from segdiff.segmentor import SegmentorConfig, fit_segmentor, save_segmentor
from segdiff.store import SliceStore
from segdiff.training import TrainSettings, pick_device, use_bf16, write_history


def main():
    p, modality = snakemake.params, snakemake.wildcards.modality
    labels = load_label_map(p.labels)
    device = pick_device(p.device)
    slices = SliceStore(snakemake.input.stores, p.segmentor["splits"])
    config = SegmentorConfig(num_classes=labels.max_id + 1, **p.segmentor["model"])
    train = dict(p.segmentor["train"])
    batch_size, augmentation = train.pop("batch_size"), train.pop("augment")
    result = fit_segmentor(slices, config, TrainSettings(seed=p.seed, bf16=use_bf16(p.precision, device), **train), batch_size, p.checkpoint,
                           device, desc=f"segmentor {modality}", augmentation=augmentation,
                           loader=loader_settings(p.loader, device), world_size=job_world_size(p.loader))
    if not is_main_process():  # a rank under torchrun: rank 0 writes the outputs
        return
    save_segmentor(snakemake.output.model, result.ema, config,
                   {"modality": modality, "train_slices": len(slices), "splits": p.segmentor["splits"]})
    write_history(result.history, snakemake.output.loss)


run_script(snakemake, main)
