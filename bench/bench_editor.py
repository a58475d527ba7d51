"""Latency of the mask editor's generate request (``segdiff serve``) for the default study's model.

A results folder with the default config's diffusion model (config/config.yaml: its architecture,
scheduler, image size and sampler; untrained weights, which cost the same to run) and a phantom
slice store is served by :func:`segdiff.editor.app.create_app`; a generate request (POST, then polling
the job as the page does, every 50 ms) is timed against the reference: the same
:func:`segdiff.sampling.samplers.generate` call made directly, in the same process. The ratio is the
server's overhead.

    python bench/bench_editor.py [--k 4] [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from fastapi.testclient import TestClient

from segdiff.pipeline.config import validate_config
from segdiff.models.diffusion import DenoiserConfig, SchedulerConfig, SegGuidedDenoiser, save_diffusion
from segdiff.editor.app import create_app
from segdiff.core.labels import load_label_map
from segdiff.editor.mask_io import encode_mask
from segdiff.sources.phantom import write_phantom_dataset
from segdiff.sampling.samplers import SamplerSettings, generate, sample_seed
from segdiff.data.shards import write_case_shards
from segdiff.data.store import SliceStore, write_subset
from segdiff.sources.volumes import load_case

REPO = Path(__file__).resolve().parents[1]


def default_study(root: Path, cfg: dict) -> None:
    """results/ of the default config: a CT axial store (3 phantom cases, the last one test) and its model."""
    labels, pre = load_label_map(cfg["dataset"]["labels"]), cfg["preprocess"]
    cases = write_phantom_dataset(root / "phantom", 3, 0, tuple(cfg["phantom"]["shape"]), tuple(cfg["phantom"]["spacing"]),
                                  cfg["seed"], 0.0)
    folder, shards = root / "slices/ct/axial", []
    for c in cases:
        shards.append(folder / f"{c['case']}.npz")
        write_case_shards(load_case(root / "phantom" / c["image"], root / "phantom" / c["label"], labels), "ct",
                          {"axial": shards[-1]}, {"axial": root / "previews"}, image_size=pre["image_size"],
                          min_foreground=pre["min_foreground"], ct_window=pre["ct_window"],
                          mri_percentiles=pre["mri_percentiles"], previews_per_case=0)
    rows = pd.DataFrame({"case": [c["case"] for c in cases], "modality": "ct", "split": ["train", "train", "test"]})
    write_subset(rows, shards, "axial", folder / "manifest.tsv", folder / "store")
    d = cfg["diffusion"]
    torch.manual_seed(cfg["seed"])
    model = SegGuidedDenoiser(DenoiserConfig(num_classes=labels.max_id + 1, conditioning=d["conditioning"], **d["model"]))
    meta = {"modality": "ct", "view": "axial", "labels": labels.names, "classes_seen": [0, *labels.ids], "seed": cfg["seed"]}
    save_diffusion(root / "models/diffusion/ct_axial.pt", model, SchedulerConfig(**d["scheduler"]), meta)
    (root / "provenance.json").write_text(json.dumps({"config": {"sampling": cfg["sampling"]}}))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=None, help="generations per request (default: the config's k)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    cfg = validate_config(yaml.safe_load((REPO / "config/config.yaml").read_text()), REPO / "config/schemas/config.schema.yaml")
    k = args.k or cfg["sampling"]["k"]
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        default_study(root, cfg)
        mask = SliceStore([root / "slices/ct/axial/store"], ["test"]).take(np.array([0])).mask[0]
        client = TestClient(create_app(root, device="cpu"))
        request = {"model": "ct_axial", "mask": encode_mask(mask), "k": k, "seed": 0}

        def through_server() -> float:
            t0 = time.perf_counter()
            job = client.post("/api/generate", json=request).json()["job"]
            while client.get(f"/api/jobs/{job}").json()["state"] == "running":
                time.sleep(0.05)
            return time.perf_counter() - t0

        from segdiff.models.diffusion import load_diffusion

        model, scheduler, _ = load_diffusion(root / "models/diffusion/ct_axial.pt")
        s = cfg["sampling"]
        sampler = SamplerSettings(sampler=s["sampler"], steps=s["steps"], eta=s["eta"], batch_size=s["batch_size"])

        def direct() -> float:
            t0 = time.perf_counter()
            generate(model, scheduler, np.repeat(mask[None], k, 0), [sample_seed(0, "editor", 0, j) for j in range(k)],
                     model.config.num_classes, sampler, torch.device("cpu"), desc="direct")
            return time.perf_counter() - t0

        through_server(), direct()  # warm-up: model load, first-call allocations
        server = [through_server() for _ in range(args.repeats)]
        reference = [direct() for _ in range(args.repeats)]
    figures = {"image_size": cfg["preprocess"]["image_size"], "k": k, "sampler": f"{s['sampler']}-{s['steps']} eta {s['eta']}",
               "threads": torch.get_num_threads(), "request_s_median": round(statistics.median(server), 3),
               "direct_generate_s_median": round(statistics.median(reference), 3),
               "ratio_request_to_direct": round(statistics.median(server) / statistics.median(reference), 3),
               "request_s_all": [round(x, 3) for x in server], "direct_s_all": [round(x, 3) for x in reference]}
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    main()
