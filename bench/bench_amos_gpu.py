"""The AMOS configuration's training and sampling on phantom data at 256 px, through the real path.

The last phantom case is held out: sampling draws k generations for its masks, and
``sample_std_across_k`` (per-pixel std across the k, averaged) shows whether they differ. The
phantom also renders k oracle "second scans" of that case (``segdiff.data.oracle``, sliced like the
case), so ``diversity_ratio`` (``segdiff.evaluation.metrics``, as the workflow's table) relates the k
generations' spread inside the organs to the true spread of p(image | mask): 1 = as diverse, 0 = none.

Phantom CT cases (AMOS22 layout, NIfTI) -> ``write_case_shards`` at ``preprocess.image_size`` ->
``write_subset`` (manifest + slice store) -> ``fit_diffusion`` with the config's model,
scheduler, batch, learning rate, bf16 / channels_last / ``torch.compile`` and its DataLoader
settings (workers, pinned memory, prefetch) for ``--steps`` steps -> ``generate`` with the
config's sampler (k generations per mask). Reports images/s of training (after compilation) and
sampling, peak GPU memory, the loss at the start and the end, and where the time went.

    python bench/bench_amos_gpu.py --config config/amos.yaml --steps 300 --json amos_gpu.json
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from segdiff.pipeline.config import validate_config
from segdiff.models.diffusion import DenoiserConfig, SchedulerConfig, fit_diffusion
from segdiff.report.figures import oracle_vs_generated_figure
from segdiff.core.labels import load_label_map
from segdiff.data.loader import loader_settings
from segdiff.evaluation.metrics import diversity, diversity_ratio
from segdiff.data.oracle import gather_oracle, render_oracle, write_oracle
from segdiff.sources.phantom import write_phantom_dataset
from segdiff.sampling.samplers import SamplerSettings, generate, sample_seed
from segdiff.data.shards import write_case_shards
from segdiff.data.store import SliceStore, write_subset
from segdiff.core.device import pick_device, use_bf16
from segdiff.pipeline.jobs import sampler_settings
from segdiff.models.training import TrainSettings
from segdiff.sources.volumes import load_case

REPO = Path(__file__).resolve().parents[1]
PHANTOM = {"shape": (96, 80, 48), "spacing": (4.0, 4.0, 6.0)}
MIN_FOREGROUND = 16


def phantom_store(work: Path, cfg: dict, n_cases: int) -> tuple[Path, list[dict]]:
    """Phantom CT cases sliced axially at the config's image size into a store; returns its folder and the cases."""
    pre, labels = cfg["preprocess"], load_label_map(cfg["dataset"]["labels"])
    cases = write_phantom_dataset(work / "phantom", n_cases, 0, PHANTOM["shape"], PHANTOM["spacing"], cfg["seed"], 0.0)
    shards = []
    for c in cases:
        shard = work / "slices/ct/axial" / f"{c['case']}.npz"
        volume = load_case(work / "phantom" / c["image"], work / "phantom" / c["label"], labels)
        write_case_shards(volume, "ct", {"axial": shard}, {"axial": work / "previews" / c["case"]},
                          image_size=pre["image_size"], min_foreground=MIN_FOREGROUND, ct_window=pre["ct_window"],
                          mri_percentiles=pre["mri_percentiles"], previews_per_case=0)
        shards.append(shard)
    splits = ["train"] * (len(cases) - 1) + ["test"]  # the last case's masks are held out for sampling
    rows = pd.DataFrame({"case": [c["case"] for c in cases], "modality": "ct", "split": splits})
    write_subset(rows, shards, "axial", work / "slices/ct/axial/manifest.tsv", work / "slices/ct/axial/store")
    return work / "slices/ct/axial/store", cases


def oracle_renders(work: Path, cfg: dict, case: dict, test) -> np.ndarray:
    """k oracle renders (N, k, H, W) of the held-out slices ``test``: the same anatomy scanned again."""
    pre, k = cfg["preprocess"], cfg["sampling"]["k"]
    renders = render_oracle(case["case"], "ct", work / "phantom" / case["label"], PHANTOM, cfg["seed"], k,
                            load_label_map(cfg["dataset"]["labels"]), ["axial"], image_size=pre["image_size"],
                            min_foreground=MIN_FOREGROUND, ct_window=pre["ct_window"], mri_percentiles=pre["mri_percentiles"])
    path = work / "oracle/axial" / f"{case['case']}.npz"
    write_oracle(renders, {"axial": path})
    return gather_oracle([path], test.case, test.view, test.slice, mask=test.mask)  # checks the masks match


def oracle_figures(cfg: dict, oracle: np.ndarray, test, images: np.ndarray, figure: Path | None) -> dict:
    """Diversity of the k generations per held-out mask, and that of the k ``oracle`` renders of the same slices
    (and their picture side by side in ``figure``)."""
    generated = images.reshape(len(test), cfg["sampling"]["k"], *images.shape[1:])
    div, div_oracle = diversity(generated, test.mask), diversity(oracle, test.mask)
    if figure:
        oracle_vs_generated_figure(oracle, generated, test.mask, load_label_map(cfg["dataset"]["labels"]), figure,
                                   f"AMOS config ({cfg['diffusion']['scheduler']['prediction_type']}) on the phantom, 256 px")
    return dict(diversity_inside=round(div["inside"], 4), diversity_outside=round(div["outside"], 4),
                oracle_diversity_inside=round(div_oracle["inside"], 4), oracle_diversity_outside=round(div_oracle["outside"], 4),
                diversity_ratio=round(diversity_ratio(generated, oracle, test.mask), 4))


def throughput(model, scheduler, masks: np.ndarray, num_classes: int, sampler: SamplerSettings, cell: str,
               device: torch.device) -> list[dict]:
    """img/s of ``cell`` (sampler:NFE) at batch 64 and 128, compiled, after a warm-up batch that compiles."""
    name, nfe = cell.split(":")
    rows = []
    for batch in (64, 128):
        settings = replace(sampler, sampler=name, steps=int(nfe), batch_size=batch, compile=True)
        n = 4 * batch
        batch_masks = np.resize(masks, (n, *masks.shape[1:]))
        generate(model, scheduler, batch_masks[:batch], list(range(batch)), num_classes, settings, device, desc="compile")
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        generate(model, scheduler, batch_masks, list(range(n)), num_classes, settings, device, desc=f"batch {batch}")
        torch.cuda.synchronize()
        rows.append({"sampler": cell, "batch_size": batch, "compile": True, "bf16": settings.bf16,
                     "images_per_s": round(n / (time.perf_counter() - t0), 1),
                     "peak_gpu_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2)})
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=REPO / "config/amos.yaml")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--cases", type=int, default=6)
    ap.add_argument("--sample-masks", type=int, default=16)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--figure", type=Path, help="PNG of oracle renders vs generations of the held-out masks")
    ap.add_argument("--ema-decay", type=float, default=None,
                    help="EMA decay of the sampled model (default: the config's; its warm-up ramp, train.ema_warmup, "
                         "makes a short run's EMA follow the trained weights)")
    ap.add_argument("--grid", nargs="*", default=["ddim:50", "dpmpp_2m_sde:10", "dpmpp_2m_sde:8", "dpmpp_2m_sde:5",
                                                  "dpmpp_2m:10"],
                    help="sampler:NFE cells: diversity ratio against the oracle and img/s of each on the held-out masks")
    ap.add_argument("--throughput", default="dpmpp_2m_sde:10",
                    help="sampler:NFE timed at batch 64 and 128, compiled, bf16 (CUDA)")
    args = ap.parse_args(argv)
    cfg = validate_config(yaml.safe_load(args.config.read_text()), REPO / "config/schemas/config.schema.yaml")
    device = pick_device(args.device)
    cuda = device.type == "cuda"
    labels = load_label_map(cfg["dataset"]["labels"])
    figures: dict = {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "config": str(args.config),
                     "prediction_type": cfg["diffusion"]["scheduler"]["prediction_type"]}

    def dump():  # after training too, so that a run cut short during sampling still reports its training
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2) + "\n")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        folder, cases = phantom_store(work, cfg, args.cases)
        store = SliceStore([folder], ["train"])
        figures.update(train_slices=len(store), image_size=store.shape[0], data_s=round(time.perf_counter() - t0, 1))
        dcfg = cfg["diffusion"]
        ema_decay = args.ema_decay if args.ema_decay is not None else dcfg["train"]["ema_decay"]
        train = dict(dcfg["train"], steps=args.steps, checkpoint_every=10**9, ema_decay=ema_decay)
        batch_size = train.pop("batch_size")
        denoiser = DenoiserConfig(num_classes=labels.max_id + 1, conditioning=dcfg["conditioning"], **dcfg["model"])
        scheduler = SchedulerConfig(**dcfg["scheduler"])
        settings = TrainSettings(seed=cfg["seed"], bf16=use_bf16(cfg["compute"]["precision"], device), **train)
        loader = loader_settings(cfg["compute"], device)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        result = fit_diffusion(store, denoiser, scheduler, settings, batch_size, work / "ckpt", device, dcfg["ablation_p"],
                               desc="amos-config diffusion", loader=loader)
        wall = time.perf_counter() - t0
        history = pd.DataFrame(result.history)
        steady = history["images_per_s"].iloc[len(history) // 3 :]  # after compilation and warm-up
        figures.update(
            train_steps=args.steps, ema_decay=ema_decay, batch_size=batch_size, loader_workers=loader.workers, compile=settings.compile,
            bf16=settings.bf16, train_wall_s=round(wall, 1), train_images_per_s_median=round(float(steady.median()), 1),
            train_images_per_s_overall=round(args.steps * batch_size / wall, 1),
            first_step_s=round(float(batch_size / history["images_per_s"].iloc[0]), 1),
            loss_first_10=round(float(history["loss"].iloc[:10].mean()), 4), loss_last_10=round(float(history["loss"].iloc[-10:].mean()), 4),
            peak_gpu_memory_train_gb=round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
            params_M=round(sum(p.numel() for p in result.ema.parameters()) / 1e6, 2),
        )
        dump()
        s = cfg["sampling"]
        sampler = sampler_settings(s, cfg["compute"]["precision"], device)
        held_out = SliceStore([folder], ["test"])
        test = held_out.take(np.linspace(0, len(held_out) - 1, min(args.sample_masks, len(held_out))).astype(int))
        masks = np.repeat(test.mask, s["k"], axis=0)
        seeds = [sample_seed(cfg["seed"], c, int(i), j) for c, i in zip(test.case, test.slice) for j in range(s["k"])]
        if cuda:
            torch.cuda.reset_peak_memory_stats()
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        images = generate(result.ema, scheduler, masks, seeds, denoiser.num_classes, sampler, device, desc="sample")
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        figures.update(sample_images=len(masks), sampler=f"{s['sampler']}-{s['steps']} eta {s['eta']}",
                       sample_images_per_s=round(len(masks) / seconds, 2),
                       peak_gpu_memory_sample_gb=round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
                       sample_std_across_k=round(float(images.reshape(-1, s["k"], *images.shape[1:]).std(axis=1).mean()), 4))
        oracle = oracle_renders(work, cfg, cases[-1], test)  # once: every sampler cell compares with it
        figures.update(oracle_figures(cfg, oracle, test, images, args.figure))
        dump()
        figures["grid"] = []
        for cell in args.grid:  # quality against NFE at 256 px: the k generations' spread against the oracle's
            name, nfe = cell.split(":")
            settings_ = replace(sampler, sampler=name, steps=int(nfe), eta=1.0)
            t0 = time.perf_counter()
            cell_images = generate(result.ema, scheduler, masks, seeds, denoiser.num_classes, settings_, device, desc=cell)
            seconds = time.perf_counter() - t0
            figures["grid"].append({"sampler": name, "nfe": int(nfe), "images_per_s": round(len(masks) / seconds, 2),
                                    **oracle_figures(cfg, oracle, test, cell_images, None)})
            dump()
        if cuda and args.throughput:
            figures["throughput"] = throughput(result.ema, scheduler, test.mask, denoiser.num_classes, sampler,
                                               args.throughput, device)
    print(json.dumps(figures, indent=2))
    dump()
    return figures


if __name__ == "__main__":
    main()
