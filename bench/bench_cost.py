"""What a study costs on one GPU, per stage, before a user starts it: measured rates x the config's work.

The work comes from the config (``--config``, e.g. ``config/amos.yaml``): training images per model
(steps x batch), generated images per run (``evaluation.max_slices`` x ``sampling.k``) times network calls
per image (the sampler's NFE), segmentor training images, evaluated slices, and the slices on disk
(``--slices``: AMOS22's, estimated, unless you pass your own count).

The rates are measurements, each named with where it came from (``RATES``; override any with
``--rate name=value``):

- diffusion training img/s: ``bench/gpu_check.sh`` on an H200 (``docs/results/gpu_amos_config_h200*.json``);
- sampling network calls per second: the same runs' DDIM-50 sampling (5.0 img/s x 50 calls);
- segmentor training: not measured on a GPU; estimated from the diffusion model's measured FLOP rate
  and both networks' FLOPs per image (``torch.utils.flop_counter`` on the meta device, 256 px);
- radiomics (FRD) features: CPU seconds per slice at 256 px, measured on one core;
- disk: the slice store's bytes per slice (float32 image + uint8 mask); the NPZ shards, uncompressed, are
  as large and stay beside it today (``results/slices/*/*/*.npz``).

    python bench/bench_cost.py --config config/amos.yaml                     # the table (markdown) and JSON
    python bench/bench_cost.py --config config/amos.yaml --rate train_img_s=280 --nfe 10   # what-if
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

#: measured rates (value, source)
RATES = {
    "train_img_s": (160.0, "diffusion training at 256 px, batch 16, compiled, bf16, H200: 155-167 img/s "
                           "(docs/results/gpu_amos_config_h200_run4.json, README)"),
    "sample_calls_s": (250.0, "DDIM-50 sampling at 256 px, batch 64, uncompiled, H200: 5.0 img/s x 50 calls"),
    "frd_cpu_s_per_slice": (0.42, "radiomics features of one 256 px slice, one CPU core (issue 20)"),
}
#: AMOS22 slices per modality and view at min_foreground 256 (estimate: ~300k slices in all, 156k CT axial+coronal+
#: sagittal train slices per the config's comment)
AMOS_SLICES = {"ct": 250_000, "mri": 50_000}


def _source(rates: dict[str, float], name: str) -> str:
    """``measured`` when ``rates[name]`` is the measured value, else ``what-if``."""
    return "measured" if rates[name] == RATES[name][0] else "what-if"


def flops_per_image(config: dict) -> dict[str, float]:
    """Forward + backward FLOPs of one 256 px image through the diffusion model and the segmentor (meta device)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from segdiff.models.diffusion import DenoiserConfig, SegGuidedDenoiser
    from segdiff.models.segmentor import SegmentorConfig, build_segmentor

    size, classes = config["preprocess"]["image_size"], 16
    model_cfg = dict(config["diffusion"]["model"])
    out = {}
    with torch.device("meta"):
        denoiser = SegGuidedDenoiser(DenoiserConfig(num_classes=classes, **{k: tuple(v) if isinstance(v, list) else v
                                                                          for k, v in model_cfg.items()}))
        seg_cfg = config["segmentor"]["model"]
        segmentor = build_segmentor(SegmentorConfig(num_classes=classes, channels=tuple(seg_cfg["channels"]),
                                                    strides=tuple(seg_cfg["strides"]), num_res_units=seg_cfg["num_res_units"]))
        for name, run in (("diffusion", lambda: denoiser(torch.randn(1, 1, size, size), torch.zeros(1, dtype=torch.long),
                                                         torch.zeros(1, classes, size, size))),
                          ("segmentor", lambda: segmentor(torch.randn(1, 1, size, size)))):
            counter = FlopCounterMode(display=False)
            with counter:
                run().sum().backward()
            out[name] = float(counter.get_total_flops())
            with FlopCounterMode(display=False) as forward:
                run()
            out[f"{name}_forward"] = float(forward.get_total_flops())
    return out


def study_cost(config: dict, rates: dict[str, float], slices: dict[str, int], nfe: int | None = None) -> dict:
    """Hours per stage for the config's study on one GPU (and CPU-hours where a stage runs on CPUs).

    Args:
        config: the validated study config.
        rates: ``RATES``' names -> values (``segmentor_img_s`` may be given; else estimated by FLOPs).
        slices: slices per modality (all views).
        nfe: network calls per generated image (default: the config's ``sampling.steps``).

    Returns:
        Rows (stage, work, rate, GPU-hours, CPU-hours, note) and the totals.
    """
    flops = flops_per_image(config)
    if "segmentor_img_s" not in rates:
        rates["segmentor_img_s"] = rates["train_img_s"] * flops["diffusion"] / flops["segmentor"]
    diffusion = config["diffusion"]["train"]
    runs = config["diffusion"]["runs"]
    modalities = sorted({r.split("/")[0] for r in runs})
    n_runs = len(runs) + len(config["sampling"]["multimodal"])
    images = config["evaluation"]["max_slices"] * config["sampling"]["k"]
    calls = nfe or config["sampling"]["steps"]
    segmentor = config["segmentor"]["train"]
    size = config["preprocess"]["image_size"]
    store_bytes = sum(slices[m] for m in modalities) * size * size * 5
    rows = [
        {"stage": "diffusion training", "work": f"{len(runs)} models x {diffusion['steps']:,} steps x {diffusion['batch_size']}",
         "gpu_h": len(runs) * diffusion["steps"] * diffusion["batch_size"] / rates["train_img_s"] / 3600,
         "rate": f"{rates['train_img_s']:.0f} img/s ({_source(rates, 'train_img_s')})"},
        {"stage": "sampling", "work": f"{n_runs} runs x {images:,} images x {calls} calls",
         "gpu_h": n_runs * images * calls / rates["sample_calls_s"] / 3600,
         "rate": f"{rates['sample_calls_s']:.0f} calls/s = {rates['sample_calls_s'] / calls:.1f} img/s at {calls} calls "
                 f"({_source(rates, 'sample_calls_s')})"},
        {"stage": "segmentor training", "work": f"{len(modalities)} models x {segmentor['steps']:,} steps x {segmentor['batch_size']}",
         "gpu_h": len(modalities) * segmentor["steps"] * segmentor["batch_size"] / rates["segmentor_img_s"] / 3600,
         "rate": f"{rates['segmentor_img_s']:.0f} img/s (not measured: the diffusion model's FLOP rate at "
                 f"{flops['segmentor'] / 1e9:.0f} vs {flops['diffusion'] / 1e9:.0f} GFLOP per image, a lower bound)"},
        {"stage": "evaluation", "work": f"{n_runs} runs x {2 * config['evaluation']['max_slices']:,} slices (generated + real)",
         "gpu_h": n_runs * 2 * config["evaluation"]["max_slices"] * flops["segmentor_forward"] / (
             rates["segmentor_img_s"] * flops["segmentor"]) / 3600,
         "cpu_h": n_runs * 2 * config["evaluation"]["max_slices"] * rates["frd_cpu_s_per_slice"] / 3600,
         "rate": f"radiomics {rates['frd_cpu_s_per_slice']} CPU-s per slice ({_source(rates, 'frd_cpu_s_per_slice')}); "
                 "the segmentor on the GPU"},
    ]
    useful, generated_gb = config.get("usefulness", {}), 0.0
    if useful.get("in_all"):
        # the usefulness experiment: one generation per train + val slice, a segmentor per extra training set
        # (oracle renders exist on the phantom only), every test slice segmented once per training set
        test = config["dataset"]["split"]["test"]
        train_val = sum(slices[m] for m in modalities) * (1 - test)
        sets = [s for s in useful["sets"] if s != "oracle"]
        rows += [
            {"stage": "usefulness: generated training sets", "work": f"{train_val:,.0f} train + val images x {calls} calls",
             "gpu_h": train_val * calls / rates["sample_calls_s"] / 3600,
             "rate": f"{rates['sample_calls_s'] / calls:.1f} img/s at {calls} calls ({_source(rates, 'sample_calls_s')})"},
            {"stage": "usefulness: segmentors", "work": f"{len(modalities)} x {len(sets)} models x {segmentor['steps']:,} "
                                                        f"steps x {segmentor['batch_size']} + {len(sets) + 1} test passes",
             "gpu_h": (len(modalities) * len(sets) * segmentor["steps"] * segmentor["batch_size"] / rates["segmentor_img_s"]
                       + (len(sets) + 1) * sum(slices[m] for m in modalities) * test * flops["segmentor_forward"]
                       / (rates["segmentor_img_s"] * flops["segmentor"])) / 3600,
             "rate": f"{rates['segmentor_img_s']:.0f} img/s (as the segmentor above)"},
        ]
        generated_gb = train_val * size * size * 5 / 1e9
    total = sum(r["gpu_h"] for r in rows)
    disk = {"store_gb": store_bytes / 1e9, "shards_gb": store_bytes / 1e9,  # uncompressed NPZ: the same bytes
            "generated_gb": generated_gb}
    return {"rows": rows, "gpu_h": total, "cpu_h": sum(r.get("cpu_h", 0) for r in rows), "disk": disk,
            "rates": rates, "flops_per_image": flops, "slices": slices, "nfe": calls}


def markdown(cost: dict) -> str:
    lines = ["| stage | work | rate | GPU-hours | CPU-hours |", "|---|---|---|---:|---:|"]
    for r in cost["rows"]:
        lines.append(f"| {r['stage']} | {r['work']} | {r['rate']} | {r['gpu_h']:.2f} | {r.get('cpu_h', 0):.2f} |")
    disk = cost["disk"]
    lines.append(f"| **total** | | | **{cost['gpu_h']:.1f}** | {cost['cpu_h']:.1f} |")
    lines.append(f"| disk | {sum(cost['slices'].values()):,} slices | store {disk['store_gb']:.0f} GB"
                 f" + NPZ shards {disk['shards_gb']:.0f} GB"
                 + (f" + generated training sets {disk['generated_gb']:.0f} GB" if disk.get("generated_gb") else "")
                 + " | | |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "config" / "amos.yaml")
    parser.add_argument("--rate", action="append", default=[], help="name=value: replace a measured rate (what-if)")
    parser.add_argument("--slices", type=json.loads, default=AMOS_SLICES, help='slices per modality, JSON: {"ct": n, "mri": m}')
    parser.add_argument("--nfe", type=int, default=None, help="network calls per generated image (default: the config's)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    from segdiff.pipeline.config import validate_config

    config = validate_config(yaml.safe_load(args.config.read_text()), REPO / "config/schemas/config.schema.yaml")
    rates = {k: v for k, (v, _) in RATES.items() if v is not None}
    for item in args.rate:
        name, value = item.split("=")
        rates[name] = float(value)
    cost = study_cost(config, rates, args.slices, args.nfe)
    print(markdown(cost))
    if args.json:
        args.json.write_text(json.dumps({"config": str(args.config), **cost, "sources": {k: s for k, (_, s) in RATES.items()}},
                                        indent=2) + "\n")


if __name__ == "__main__":
    main()
