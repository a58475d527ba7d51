"""Benchmark: quality against network calls per image (NFE), for every sampler, on a finished study.

For every evaluated run of a study (``results/evaluation/*/metrics.json``), every sampler of
:data:`SAMPLERS`, every NFE of ``--nfe`` and ``--seeds`` seeds: the run's k generations of its
test masks are drawn again, and the run's metrics are recomputed from its saved arrays
(:func:`segdiff.evaluation.run.recompute_metrics`) with the generations swapped in:

- Dice_gen / Dice_orig (the auxiliary segmentor on the generations and on the real slices);
- the diversity ratio: the std across the k generations inside the organs, against the oracle's;
- FRD and FD_seg, next to their oracle floors;
- seconds per image (one thread, the study's batch), as a ratio to DDIM at the same NFE in the figure.

Seed 0 is the study's seed, so the study's own sampler at its own NFE reproduces its generation file.
Each cell is appended to ``<out>/cells.jsonl`` when done (a rerun skips the cells it has); ``--plot``
then writes ``<out>.png`` (quality against NFE, one line per sampler) and ``<out>.md`` (the default
test: each sampler × NFE against DDIM-50, run by run).

    python bench/bench_samplers.py --results results --out docs/results/sampler_grid --shard 0/2 &
    python bench/bench_samplers.py --results results --out docs/results/sampler_grid --shard 1/2
    python bench/bench_samplers.py --results results --out docs/results/sampler_grid --plot
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

#: sampler label -> SamplerSettings fields (steps set per cell)
SAMPLERS = {
    "DDIM eta 1 (MONAI grid)": {"sampler": "ddim", "eta": 1.0},
    "SDE-DPM-Solver++ 2M, lambda grid": {"sampler": "dpmpp_2m_sde", "spacing": "lambda"},
    "SDE-DPM-Solver++ 2M, linear grid": {"sampler": "dpmpp_2m_sde", "spacing": "linear"},
    "DPM-Solver++ 2M (ODE), lambda grid": {"sampler": "dpmpp_2m", "spacing": "lambda"},
}
REFERENCE = ("DDIM eta 1 (MONAI grid)", 50)
KEYS = ("dice_gen", "dice_orig", "dice_ratio", "dice_oracle", "diversity_ratio", "diversity_gen", "diversity_oracle",
        "frd", "frd_oracle", "fd_seg", "fd_seg_oracle")


def run_cells(results: Path, out: Path, nfes: list[int], seeds: int, shard: tuple[int, int], batch_size: int,
              samplers: list[str] | None = None, only_runs: list[str] | None = None) -> None:
    import torch

    from segdiff.core.labels import LabelMap
    from segdiff.evaluation.features.radiomics import radiomics_features
    from segdiff.evaluation.run import recompute_metrics
    from segdiff.models.diffusion import load_diffusion
    from segdiff.models.segmentor import load_segmentor, predict
    from segdiff.sampling.files import read_generation
    from segdiff.sampling.samplers import SamplerSettings, generate, sample_seed

    torch.set_num_threads(1)
    cpu = torch.device("cpu")
    out.mkdir(parents=True, exist_ok=True)
    cells_file = out / "cells.jsonl"
    done = set()
    if cells_file.exists():
        done = {(r["run"], r["sampler"], r["nfe"], r["seed_rep"]) for r in map(json.loads, cells_file.read_text().splitlines())}
    runs = [r for r in sorted(results.glob("evaluation/*/metrics.json")) if not only_runs or r.parent.name in only_runs]
    cells = [(run, name, nfe, rep) for run in runs for name in samplers or SAMPLERS for nfe in nfes for rep in range(seeds)]
    mine = cells[shard[0] :: shard[1]]
    loaded: dict = {}
    for i, (run, name, nfe, rep) in enumerate(mine):
        key = (run.parent.name, name, nfe, rep)
        if key in done:
            continue
        if loaded.get("run") != run:
            summary = json.loads(run.read_text())
            with np.load(run.parent / "arrays.npz") as z:
                arrays = {k: z[k] for k in z.files if not k.endswith("_generated") and k != "generated"}
            root = results.resolve().parent  # the study's paths are relative to its working directory
            gen = read_generation(root / summary["generation"])
            model, scheduler_config, meta = load_diffusion(root / gen["info"]["model"], cpu)
            segmentor, _, _ = load_segmentor(root / summary["segmentor"], cpu)
            labels = LabelMap({int(i): str(n) for i, n in meta["labels"].items()})
            loaded = {"run": run, "summary": summary, "arrays": arrays, "gen": gen, "model": model,
                      "scheduler": scheduler_config, "segmentor": segmentor, "labels": labels}
        arrays, gen = loaded["arrays"], loaded["gen"]
        k = int(gen["info"]["k"])
        seed = int(gen["seed"]) + rep
        masks = arrays["mask"]
        seeds_ = [sample_seed(seed, f"{c}/{v}", s, j) for c, v, s in zip(arrays["case"], arrays["view"], arrays["slice"])
                  for j in range(k)]
        settings = SamplerSettings(steps=nfe, batch_size=batch_size, **SAMPLERS[name])
        tick = time.perf_counter()
        images = generate(loaded["model"], loaded["scheduler"], np.repeat(masks, k, axis=0), seeds_,
                          loaded["model"].config.num_classes, settings, cpu, desc=f"{key[0]} {settings.sampler} {nfe}")
        seconds = time.perf_counter() - tick
        generated = images.reshape(len(masks), k, *masks.shape[1:])
        cell = {**arrays, "generated": generated}
        cell["pred_generated"], cell["features_generated"] = predict(loaded["segmentor"], generated[:, 0], cpu, features=True)
        cell["radiomics_generated"] = radiomics_features(generated[:, 0])
        labels = loaded["labels"]
        metrics = recompute_metrics(cell, labels.ids, labels.max_id + 1)
        row = {"run": key[0], "label": loaded["summary"]["label"], "sampler": name, "nfe": nfe, "seed_rep": rep,
               "s_per_img": seconds / len(images), **{m: metrics[m] for m in KEYS}}
        with cells_file.open("a") as f:
            f.write(json.dumps(row, default=float) + "\n")
        print(f"[{i + 1}/{len(mine)}] {row['label']} {name} NFE {nfe} seed {rep}: Dice ratio {row['dice_ratio']:.3f} "
              f"diversity ratio {row['diversity_ratio']} {row['s_per_img'] * 1000:.0f} ms/img", flush=True)


def _mean(rows: list[dict], key: str) -> float:
    values = [r[key] for r in rows if r.get(key) is not None]
    return float(np.mean(values)) if values else float("nan")


def plot(out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    rows = pd.DataFrame([json.loads(line) for line in (out / "cells.jsonl").read_text().splitlines()])
    runs = list(dict.fromkeys(rows["label"]))
    panels = [("dice_ratio", "Dice_gen / Dice_orig"), ("diversity_ratio", "diversity ratio (vs oracle)"),
              ("frd", "FRD (oracle floor dotted)"), ("fd_seg", "FD_seg (oracle floor dotted)"), ("s_per_img", "s / image (1 thread)")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.0 * len(panels), 3.9))
    for ax, (key, title) in zip(axes, panels):
        for name, group in rows.groupby("sampler", sort=False):
            per_seed = group.groupby(["nfe", "seed_rep"])[key].mean()  # mean over the runs
            mean, sd = per_seed.groupby("nfe").mean(), per_seed.groupby("nfe").std().fillna(0)
            ax.errorbar(mean.index, mean.values, yerr=sd.values, marker="o", ms=3, capsize=2, label=name)
        if key in ("frd", "fd_seg"):
            ax.axhline(rows[f"{key}_oracle"].mean(), color="k", ls=":", lw=1)
        if key == "diversity_ratio":
            ax.axhspan(0.5, 1.5, color="g", alpha=0.06)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
        ax.set_xticks(sorted(rows["nfe"].unique()), [str(n) for n in sorted(rows["nfe"].unique())])
        ax.set_xlabel("network calls per image (NFE)")
        ax.set_title(title, fontsize=10)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Quality against NFE, mean of {len(runs)} runs ({', '.join(runs)}); bars: SD over seeds", fontsize=10)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)
    (out.with_suffix(".md")).write_text(default_test(rows, runs))


def default_test(rows, runs: list[str]) -> str:
    """Markdown: per sampler and NFE and run, Dice_gen and the diversity ratio (means of the seeds) against
    DDIM-50's, and whether the run passes: |ΔDice_gen| ≤ max(DDIM-50's seed spread, 0.01), |Δdiversity| ≤ 0.1."""
    ref_name, ref_nfe = REFERENCE
    ref = rows[(rows["sampler"] == ref_name) & (rows["nfe"] == ref_nfe)]
    seeds = rows.groupby(["label", "sampler", "nfe"])["seed_rep"].nunique()
    more = sorted({f"{label} {name} {nfe}" for (label, name, nfe), n in seeds.items() if n > seeds.min()})
    lines = [f"Reference: {ref_name} at {ref_nfe} network calls (NFE). Each run's cell: ΔDice_gen / Δdiversity ratio "
             "(seed means, this sampler minus the reference); ✓ when |ΔDice_gen| ≤ max(the reference's seed spread, 0.01) "
             "and |Δdiversity| ≤ 0.1. ms/img: one thread, batch 64, two benchmark processes on two cores.",
             f"Seeds per cell: {seeds.min()}" + (f"; {seeds.max()} for {', '.join(more)}" if more else "") + ".", "",
             "| sampler | NFE | " + " | ".join(runs) + " | runs passing | ms/img |",
             "|---|---" + "|---" * len(runs) + "|---|---|"]
    for (name, nfe), group in rows.groupby(["sampler", "nfe"], sort=False):
        cells, passing = [], 0
        for run in runs:
            cell, base = group[group["label"] == run], ref[ref["label"] == run]
            if cell.empty or base.empty:
                cells.append("—")
                continue
            tolerance = max(float(np.ptp(base["dice_gen"])), 0.01)
            d_dice = cell["dice_gen"].mean() - base["dice_gen"].mean()
            d_div = cell["diversity_ratio"].mean() - base["diversity_ratio"].mean()
            ok = abs(d_dice) <= tolerance and abs(d_div) <= 0.1
            passing += ok
            cells.append(f"{d_dice:+.3f} / {d_div:+.2f} {'✓' if ok else '✗'}")
        lines.append(f"| {name} | {nfe} | " + " | ".join(cells) + f" | {passing}/{len(runs)} | {group['s_per_img'].mean() * 1000:.0f} |")
    lines += ["", "Absolute values (means over seeds): Dice_gen / Dice_orig, diversity ratio, FRD (oracle floor), "
              "FD_seg (oracle floor):", "", "| sampler | NFE | " + " | ".join(runs) + " |", "|---|---" + "|---" * len(runs) + "|"]
    for (name, nfe), group in rows.groupby(["sampler", "nfe"], sort=False):
        cells = []
        for run in runs:
            cell = group[group["label"] == run]
            cells.append("—" if cell.empty else
                         f"{cell['dice_ratio'].mean():.3f}, {cell['diversity_ratio'].mean():.2f}, "
                         f"{cell['frd'].mean():.2f} ({cell['frd_oracle'].mean():.2f}), {cell['fd_seg'].mean():.1f} "
                         f"({cell['fd_seg_oracle'].mean():.1f})")
        lines.append(f"| {name} | {nfe} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=Path("results"), help="a finished study's results folder")
    parser.add_argument("--out", type=Path, default=Path("docs/results/sampler_grid"))
    parser.add_argument("--nfe", type=int, nargs="+", default=[3, 5, 8, 10, 25, 50])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--shard", default="0/1", help="i/n: this process takes every n-th cell from the i-th")
    parser.add_argument("--samplers", nargs="*", choices=list(SAMPLERS), help="a subset of SAMPLERS (default: all)")
    parser.add_argument("--runs", nargs="*", help="evaluation folder names, e.g. ct_axial (default: every run)")
    parser.add_argument("--plot", action="store_true", help="only plot the cells measured so far")
    args = parser.parse_args()
    if args.plot:
        plot(args.out)
        return
    i, n = (int(v) for v in args.shard.split("/"))
    run_cells(args.results, args.out, args.nfe, args.seeds, (i, n), args.batch_size, args.samplers, args.runs)


if __name__ == "__main__":
    main()
