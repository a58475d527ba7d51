"""Benchmark: this project's diffusion model vs the reference configuration of Konz et al. (2024).

In one process, on one device, at the same image size and batch:

- training: images/s of full optimisation steps (forward, loss, backward, AdamW) — ours with the
  trainer's device settings (bf16 autocast, channels_last, fused AdamW on CUDA), the reference in
  fp32 as published (diffusers ``UNet2DModel``, block_out_channels (128,128,256,256,512,512),
  layers_per_block 2, attention in the fifth down block and its mirror, 1-channel integer mask
  concatenated to the image);
- model FLOPs utilisation: FLOPs of one training step counted by ``torch.utils.flop_counter``
  (forward + backward), divided by the step time, against the bf16 dense peak measured in the
  same run (an 8192^3 matmul) and against the data-sheet peak where the GPU is known;
- sampling: network evaluations per image (our sampler vs DDPM-1000) and images/s of a sampling
  pass. The reference's 1000-step pass is timed on ``--ref-steps`` steps and extrapolated
  (per-step cost is constant); ours runs in full.

    pip install -e ".[bench]"
    python bench/bench_diffusion.py                      # CPU: 64 px, batch 4
    python bench/bench_diffusion.py --size 256 --batch 16 --config config/amos.yaml  # GPU: the poster's scale
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from torch.utils.flop_counter import FlopCounterMode

from segdiff.pipeline.config import validate_config
from segdiff.models.diffusion import DenoiserConfig, SchedulerConfig, SegGuidedDenoiser, diffusion_loss, make_scheduler
from segdiff.sampling.samplers import SamplerSettings, generate
from segdiff.core.device import pick_device

REPO = Path(__file__).resolve().parents[1]
NUM_CLASSES = 16


def reference_model():
    from diffusers import UNet2DModel

    return UNet2DModel(
        sample_size=None, in_channels=2, out_channels=1, layers_per_block=2,
        block_out_channels=(128, 128, 256, 256, 512, 512),
        down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"),
    )


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


#: bf16 dense tensor-core peak (TFLOP/s) from the vendors' data sheets
DATASHEET_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0}


def datasheet_peak(name: str) -> float | None:
    return next((v for k, v in DATASHEET_BF16_TFLOPS.items() if k in name), None)


def measured_peak_tflops(device) -> float:
    """bf16 matmul throughput of this GPU, measured now (the roofline the MFU is read against)."""
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    seconds = time_steps(lambda: a @ b, 10, device)
    return 2 * 8192**3 / seconds / 1e12


def step_flops(step) -> int:
    """FLOPs of one call of ``step`` (forward + backward), counted by torch's FLOP counter."""
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def time_steps(step, n, device):
    step()  # warm-up (allocations, cudnn autotune, compile)
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    synchronize(device)
    return (time.perf_counter() - t0) / n


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--train-steps", type=int, default=3)
    ap.add_argument("--ref-steps", type=int, default=5, help="reference DDPM steps timed (extrapolated to 1000)")
    ap.add_argument("--config", type=Path, default=REPO / "config/config.yaml")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    device = pick_device(args.device)
    cuda = device.type == "cuda"
    cfg = validate_config(yaml.safe_load(args.config.read_text()), REPO / "config/schemas/config.schema.yaml")
    ours = SegGuidedDenoiser(DenoiserConfig(num_classes=NUM_CLASSES, conditioning=cfg["diffusion"]["conditioning"],
                                            **cfg["diffusion"]["model"])).to(device)
    sched_cfg = SchedulerConfig(**cfg["diffusion"]["scheduler"])
    scheduler = make_scheduler(sched_cfg, "ddpm")
    ref = reference_model().to(device)
    if cuda:
        ours.to(memory_format=torch.channels_last)
    compiled = torch.compile(ours) if cuda and cfg["diffusion"]["train"]["compile"] else ours
    g = torch.Generator(device=device).manual_seed(0)
    images = torch.rand(args.batch, 1, args.size, args.size, device=device)
    masks = torch.randint(0, NUM_CLASSES, (args.batch, args.size, args.size), device=device)
    opt_ours = torch.optim.AdamW(ours.parameters(), lr=1e-4, fused=cuda or None)
    opt_ref = torch.optim.AdamW(ref.parameters(), lr=1e-4)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()

    net = ours

    def step_ours():
        with autocast:
            loss = diffusion_loss(net, scheduler, images, masks, NUM_CLASSES, g)
        opt_ours.zero_grad(set_to_none=True)
        loss.backward()
        opt_ours.step()

    def step_ref():
        x0 = images * 2 - 1
        noise = torch.randn(x0.shape, generator=g, device=device)
        t = torch.randint(0, 1000, (args.batch,), generator=g, device=device)
        noisy = scheduler.add_noise(x0, noise, t)
        out = ref(torch.cat([noisy, masks[:, None].float()], 1), t).sample
        loss = F.mse_loss(out, noise)
        opt_ref.zero_grad(set_to_none=True)
        loss.backward()
        opt_ref.step()

    flops_ours, flops_ref = step_flops(step_ours), step_flops(step_ref)  # eager: the same arithmetic as compiled
    net = compiled
    time_steps(step_ours, 2, device)  # compilation and autotuning before the timed steps
    t_ours = time_steps(step_ours, args.train_steps, device)
    t_ref = time_steps(step_ref, args.train_steps, device)
    peak = measured_peak_tflops(device) if cuda else None
    sheet = datasheet_peak(torch.cuda.get_device_name(0)) if cuda else None
    if cuda:
        peak_memory_gb = torch.cuda.max_memory_allocated() / 2**30

    sampling = SamplerSettings(sampler=cfg["sampling"]["sampler"], steps=cfg["sampling"]["steps"], eta=cfg["sampling"]["eta"],
                               batch_size=args.batch)
    mask_np = masks.cpu().numpy()
    synchronize(device)
    t0 = time.perf_counter()
    generate(ours, sched_cfg, mask_np, list(range(args.batch)), NUM_CLASSES, sampling, device, desc="ours")
    synchronize(device)
    sample_ours = time.perf_counter() - t0

    @torch.no_grad()
    def ref_eval():
        x = torch.randn(args.batch, 1, args.size, args.size, device=device)
        ref(torch.cat([x, masks[:, None].float()], 1), torch.full((args.batch,), 500, device=device)).sample

    ref.eval()
    sample_ref = time_steps(ref_eval, args.ref_steps, device) * 1000
    figures = {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu", "size": args.size, "batch": args.batch,
        "params_ours_M": round(sum(p.numel() for p in ours.parameters()) / 1e6, 2),
        "params_ref_M": round(sum(p.numel() for p in ref.parameters()) / 1e6, 2),
        "train_images_per_s_ours": round(args.batch / t_ours, 2), "train_images_per_s_ref": round(args.batch / t_ref, 2),
        "train_speedup": round(t_ref / t_ours, 2), "train_goal": 2.5,
        "compiled": compiled is not ours,
        "train_tflop_per_step_ours": round(flops_ours / 1e12, 3), "train_tflop_per_step_ref": round(flops_ref / 1e12, 3),
        "achieved_tflops_ours": round(flops_ours / t_ours / 1e12, 1), "achieved_tflops_ref": round(flops_ref / t_ref / 1e12, 1),
        "measured_bf16_peak_tflops": round(peak, 1) if peak else None, "datasheet_bf16_peak_tflops": sheet,
        "mfu_ours_vs_measured": round(flops_ours / t_ours / 1e12 / peak, 3) if peak else None,
        "mfu_ours_vs_datasheet": round(flops_ours / t_ours / 1e12 / sheet, 3) if sheet else None,
        "mfu_ref_vs_measured": round(flops_ref / t_ref / 1e12 / peak, 3) if peak else None,
        "peak_gpu_memory_gb": round(peak_memory_gb, 2) if cuda else None,
        "nfe_ours": sampling.steps, "nfe_ref": 1000, "nfe_ratio": round(1000 / sampling.steps, 1), "nfe_goal": 20,
        "sample_images_per_s_ours": round(args.batch / sample_ours, 3), "sample_images_per_s_ref": round(args.batch / sample_ref, 4),
        "sample_speedup": round(sample_ref / sample_ours, 1),
    }
    print(f"device {figures['device']}, {args.size}px, batch {args.batch}; params ours {figures['params_ours_M']} M, "
          f"reference {figures['params_ref_M']} M")
    print(f"training: ours {figures['train_images_per_s_ours']} img/s, reference {figures['train_images_per_s_ref']} img/s "
          f"-> {figures['train_speedup']}x (goal >= 2.5x)")
    print(f"FLOPs per step: ours {figures['train_tflop_per_step_ours']} TFLOP, reference {figures['train_tflop_per_step_ref']} TFLOP; "
          f"achieved ours {figures['achieved_tflops_ours']} TFLOP/s, reference {figures['achieved_tflops_ref']} TFLOP/s; "
          f"MFU ours {figures['mfu_ours_vs_measured']} of the measured bf16 peak ({figures['measured_bf16_peak_tflops']} TFLOP/s), "
          f"{figures['mfu_ours_vs_datasheet']} of the data sheet's")
    print(f"sampling: {sampling.sampler}-{sampling.steps} vs DDPM-1000 = {figures['nfe_ratio']}x fewer network evaluations "
          f"(goal >= 20x); ours {figures['sample_images_per_s_ours']} img/s, reference {figures['sample_images_per_s_ref']} img/s "
          f"(extrapolated from {args.ref_steps} steps) -> {figures['sample_speedup']}x")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    main()
