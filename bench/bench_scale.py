"""Benchmark: memory of training, sampling and evaluation is O(batch), not O(dataset).

For each size in ``--sizes`` (training slices) at ``--image-size``:

1. ``build``: synthetic per-case shards (cases of ``--slices-per-case`` slices; ~80 % of the
   cases ``train``, the rest ``test``, so the test set grows with the size too), written with
   :meth:`segdiff.data.slicing.Shard.save`, then :func:`segdiff.data.store.write_subset` builds the manifest
   and the slice store under ``--workdir``; the shards are deleted once the store exists
   (and the store once its size is measured, unless ``--keep``).
2. one fresh subprocess per stage, so that each peak RSS (``VmHWM`` of ``/proc/self/status``,
   which counts the pages of the memory maps the process touched too) is that stage's alone:

   - ``train``: ``--train-steps`` steps of :func:`segdiff.models.diffusion.fit_diffusion` on
     ``SliceStore([store], ["train"])`` with the default study's model (config/config.yaml; fused attention on) at
     the image size, batch 8, ``--workers`` loader workers; then a segmentor for 2 steps (for the
     evaluation); both saved;
   - ``sample_eval``: :func:`segdiff.sampling.experiments.sample_run` (multi-inference, DDIM 5 steps,
     eta 1, k 2, ``--max-slices`` test slices; ``--sample-steps`` DDIM steps, default 10: 5 steps
     give NaN images, see the option's help), then :func:`segdiff.evaluation.run.evaluation_job`
     on the same store;
   - ``loader``: :func:`segdiff.data.loader.step_loader` throughput (``--loader-batches`` batches of
     16, each batch's tensors reduced so every byte is read), workers=1 (per-worker rate) and
     workers=0 (in-process reference): first with the page cache as the build left it, then
     after ``posix_fadvise(DONTNEED)`` on the store's files (cold cache).

The ``build`` stage also runs in a child, so its peak RSS is reported too (informative: the
store is written with plain appends, one shard at a time).

Prints a markdown table, the max/min ratio of each RSS column (goal: flat within 10 % from the
smallest to the largest size) and the loader goal (>= 1000 img/s per worker at 256 px); writes
the rows as JSON with ``--json``. Progress goes to stderr.

    python bench/bench_scale.py                                  # 1k .. 64k slices at 256 px
    python bench/bench_scale.py --sizes 200 3200 --image-size 64 --stages train sample_eval
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config/config.yaml"
SCHEMA = REPO / "config/schemas/config.schema.yaml"
MODALITY, VIEW, LABELS = "ct", "axial", "amos15"
STAGES = ("build", "train", "sample_eval", "loader")
ORGANS = (6, 1, 2, 3, 7, 8)  # liver, spleen, kidneys, stomach, aorta: "a few label ids" of amos15
GB, MB = 1e9, 2**20


def log(message: str) -> None:
    print(f"[bench_scale {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# memory measurement (inside a stage's child process)


def proc_status() -> dict[str, int]:
    """The ``kB`` fields of /proc/self/status (VmHWM, VmRSS, RssAnon, RssFile, ...), in kB."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        parts = value.split()
        if len(parts) == 2 and parts[1] == "kB":
            out[key] = int(parts[0])
    return out


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (``echo 5 > /proc/self/clear_refs``, Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class RssSampler:
    """Peaks of RssAnon and RssFile of this process, sampled every ``interval`` s in a thread
    (VmHWM is their peak sum; this splits it into heap/tensors vs touched memory-mapped pages)."""

    def __init__(self, interval: float = 0.05):
        self.interval, self.peak_anon, self.peak_file = interval, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        status = proc_status()
        self.peak_anon = max(self.peak_anon, status.get("RssAnon", 0))
        self.peak_file = max(self.peak_file, status.get("RssFile", 0) + status.get("RssShmem", 0))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> RssSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def result(self) -> dict:
        return {"peak_anon_mb": self.peak_anon / 1024, "peak_file_mb": self.peak_file / 1024}


def peak_rss_mb() -> float:
    return proc_status()["VmHWM"] / 1024


def children_peak_rss_mb() -> float:
    """Largest peak RSS of any waited-for child (DataLoader workers), 0 if none."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------
# synthetic data


def synthetic_bank(image_size: int, count: int = 8, seed: int = 0):
    """``count`` smooth images in [0, 1] (a body ellipse, a few soft blobs, low-frequency waves)
    and their masks (ellipses of a few amos15 organs): tiled with per-case offsets into shards."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:image_size, 0:image_size].astype(np.float32) / image_size - 0.5
    images = np.empty((count, image_size, image_size), np.float32)
    masks = np.zeros((count, image_size, image_size), np.uint8)
    for i in range(count):
        body = ((x / 0.45) ** 2 + (y / 0.38) ** 2) < 1
        image = 0.05 + 0.35 * body
        for _ in range(6):
            cy, cx, s, a = rng.uniform(-0.25, 0.25), rng.uniform(-0.3, 0.3), rng.uniform(0.03, 0.12), rng.uniform(0.1, 0.4)
            image = image + a * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * s * s)) * body
        fx, fy, phase = rng.uniform(2, 6, 2).tolist() + [rng.uniform(0, 6.3)]
        image = image + 0.05 * np.sin(2 * np.pi * (fx * x + fy * y) + phase) * body
        images[i] = np.clip(image, 0, 1)
        for organ in rng.choice(ORGANS, size=4, replace=False):
            cy, cx = rng.uniform(-0.2, 0.2), rng.uniform(-0.25, 0.25)
            ry, rx = rng.uniform(0.05, 0.12, 2)
            masks[i][(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 < 1) & body] = organ
    return images, masks


def case_shard(bank, case: int, n: int):
    """The shard of case number ``case``: ``n`` slices cycling through the bank, shifted and
    rescaled per case (vectorised: a few array passes per case, no per-pixel noise)."""
    import numpy as np

    from segdiff.data.slicing import Shard

    images, masks = bank
    order = (np.arange(n) + case) % len(images)
    shift = (case * 7) % max(1, images.shape[-1] // 8) - images.shape[-1] // 16
    gain, offset = 0.85 + 0.03 * (case % 6), 0.01 * (case % 5)
    image = np.roll(images[order], shift, axis=2)
    image *= np.float32(gain)
    image += np.float32(offset)
    np.clip(image, 0, 1, out=image)
    return Shard(image=image, mask=np.roll(masks[order], shift, axis=2), slice=np.arange(n, dtype=np.int32) + 3,
                 pixel_mm=400.0 / images.shape[-1])


def plan_cases(size: int, slices_per_case: int, test_fraction: float = 0.2) -> list[tuple[str, str, int]]:
    """(case, split, n_slices): ``size`` training slices in cases of ``slices_per_case`` (the last
    train case may be shorter) and ~``test_fraction`` of the cases ``test``, interleaved."""
    n_train = math.ceil(size / slices_per_case)
    n_test = max(1, round(n_train * test_fraction / (1 - test_fraction)))
    every = (n_train + n_test) / n_test  # a test case every `every` cases
    test_at = {min(n_train + n_test - 1, int(every * (j + 0.5))) for j in range(n_test)}
    while len(test_at) < n_test:  # rounding collisions (tiny sizes)
        test_at.add(max(set(range(n_train + n_test)) - test_at))
    cases, left = [], size
    for i in range(n_train + n_test):
        if i in test_at:
            cases.append((f"case{i:05d}", "test", slices_per_case))
        else:
            n = min(slices_per_case, left)
            left -= n
            cases.append((f"case{i:05d}", "train", n))
    return cases


def store_paths(workdir: Path, size: int, image_size: int) -> dict[str, Path]:
    root = Path(workdir) / f"n{size}_px{image_size}"
    return {"root": root, "shards": root / "shards", "manifest": root / MODALITY / VIEW / "manifest.tsv",
            "store": root / MODALITY / VIEW / "store", "out": root / "out"}


def du_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` (apparent size)."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


# ---------------------------------------------------------------------------------------------
# stages (each runs in its own child process; see run_child)


def stage_build(workdir: str, size: int, image_size: int, slices_per_case: int, seed: int = 0,
                test_fraction: float = 0.2, shard_files: str = "auto", disk_margin_gb: float = 15.0,
                keep_shards: bool = False) -> dict:
    """Write the shards and build manifest + store; returns times, sizes, the shard mode.

    ``shard_files``: ``distinct`` gives each case its own shard file; ``pool`` hard-links the
    shards of equal length to a pool of 16 files (content repeats every 16 cases), which halves
    the peak disk use (the store is written in full either way) but lets the build read its shards
    from the page cache; ``auto`` is ``distinct`` when the disk holds shards and store at once plus
    ``disk_margin_gb`` (other work shares the disk), else ``pool``.
    """
    import pandas as pd

    from segdiff.data.store import write_subset

    paths = store_paths(Path(workdir), size, image_size)
    for key in ("store", "manifest"):
        if paths[key].exists():
            shutil.rmtree(paths[key]) if paths[key].is_dir() else paths[key].unlink()
    paths["shards"].mkdir(parents=True, exist_ok=True)
    paths["store"].parent.mkdir(parents=True, exist_ok=True)
    cases = plan_cases(size, slices_per_case, test_fraction)
    total = sum(n for _, _, n in cases)
    slice_bytes = image_size * image_size * 5 + 4
    free = shutil.disk_usage(paths["root"]).free
    if shard_files not in ("auto", "distinct", "pool"):
        raise ValueError(f"shard_files must be auto, distinct or pool, got {shard_files!r}")
    distinct = shard_files == "distinct" or (shard_files == "auto" and free > 2 * total * slice_bytes + disk_margin_gb * GB)
    if total * slice_bytes * (2 if distinct else 1) + 1 * GB > free:
        raise RuntimeError(f"not enough disk under {paths['root']}: {free / GB:.1f} GB free")
    pool: dict[tuple[int, int], Path] = {}
    bank = synthetic_bank(image_size, seed=seed)
    log(f"build n={size}: {len(cases)} cases, {total} slices ({total * slice_bytes / GB:.2f} GB of store), "
        f"{'one shard file per case' if distinct else 'shards hard-linked from a pool of 16'}")
    tick = time.perf_counter()
    shard_files = []
    with RssSampler() as sampler:
        for number, (case, _, n) in enumerate(cases):
            path = paths["shards"] / f"{case}.npz"
            key = (number % 16, n)
            if distinct or key not in pool:
                case_shard(bank, number, n).save(path)
                pool.setdefault(key, path)
            else:
                os.link(pool[key], path)
            shard_files.append(path)
        shards_s = time.perf_counter() - tick
        peak_shards = peak_rss_mb()
        log(f"build n={size}: shards written in {shards_s:.1f} s; building the store")
        tick = time.perf_counter()
        rows = pd.DataFrame({"case": [c for c, _, _ in cases], "modality": MODALITY, "split": [s for _, s, _ in cases]})
        write_subset(rows, shard_files, VIEW, paths["manifest"], paths["store"])
        store_s = time.perf_counter() - tick
    if not keep_shards:
        shutil.rmtree(paths["shards"])
    store_bytes = du_bytes(paths["store"])
    n_train = int(sum(n for _, s, n in cases if s == "train"))
    log(f"build n={size}: store {store_bytes / GB:.2f} GB in {store_s:.1f} s")
    return {"stage": "build", "size": size, "train_slices": n_train, "test_slices": int(total - n_train),
            "cases": len(cases), "store": str(paths["store"]), "store_bytes": store_bytes, "shards_s": shards_s,
            "store_s": store_s, "shard_files": "distinct" if distinct else "pool-of-16 (hard links)",
            "peak_rss_shards_mb": peak_shards, "peak_rss_mb": peak_rss_mb(), **sampler.result()}


def default_study() -> dict:
    """config/config.yaml validated (schema defaults filled in)."""
    import yaml

    from segdiff.pipeline.config import validate_config

    return validate_config(yaml.safe_load(CONFIG.read_text()), SCHEMA)


def stage_train(store: str, out_dir: str, steps: int = 20, batch_size: int = 8, workers: int = 2,
                segmentor_steps: int = 2, seed: int = 0) -> dict:
    """``steps`` diffusion training steps and ``segmentor_steps`` segmentor steps on the store's
    train split (CPU), both models saved into ``out_dir``."""
    import torch

    from segdiff.models.diffusion import DenoiserConfig, SchedulerConfig, fit_diffusion, save_diffusion
    from segdiff.core.labels import load_label_map
    from segdiff.data.loader import LoaderSettings
    from segdiff.models.segmentor import SegmentorConfig, fit_segmentor, save_segmentor
    from segdiff.data.store import SliceStore
    from segdiff.core.device import use_bf16
    from segdiff.models.training import TrainSettings

    cfg, out = default_study(), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cpu")
    bf16 = use_bf16(cfg["compute"]["precision"], device)
    labels = load_label_map(LABELS)
    loader = LoaderSettings(workers=workers, prefetch=cfg["compute"]["prefetch"])
    with RssSampler() as sampler:
        slices = SliceStore([store], ["train"])
        diff = cfg["diffusion"]
        # fused attention as config/amos.yaml has it: the default study turns it off for speed at 48 px,
        # but at 256 px plain attention over the middle block's 4,096 tokens costs GBs per batch
        model = {**diff["model"], "use_flash_attention": True}
        denoiser = DenoiserConfig(num_classes=labels.max_id + 1, conditioning=diff["conditioning"], **model)
        scheduler = SchedulerConfig(**diff["scheduler"])
        train = {**diff["train"], "steps": steps, "checkpoint_every": max(steps, 1)}
        train.pop("batch_size")
        tick = time.perf_counter()
        result = fit_diffusion(slices, denoiser, scheduler, TrainSettings(seed=seed, bf16=bf16, **train), batch_size,
                               out / "diffusion.ckpt", device, diff["ablation_p"], desc="bench diffusion", loader=loader)
        train_s = time.perf_counter() - tick
        save_diffusion(out / "diffusion.pt", result.ema, scheduler,
                       {"modality": MODALITY, "view": VIEW, "train_slices": len(slices), "labels": labels.names,
                        "seed": seed, "classes_seen": slices.classes})
        (out / "diffusion.ckpt").unlink(missing_ok=True)
        peak_diffusion = peak_rss_mb()
        seg = cfg["segmentor"]
        seg_config = SegmentorConfig(num_classes=labels.max_id + 1, **seg["model"])
        seg_train = {**seg["train"], "steps": segmentor_steps, "checkpoint_every": max(segmentor_steps, 1)}
        seg_train.pop("batch_size")
        augmentation = seg_train.pop("augment")
        seg_result = fit_segmentor(slices, seg_config, TrainSettings(seed=seed, bf16=bf16, **seg_train), batch_size,
                                   out / "segmentor.ckpt", device, desc="bench segmentor", augmentation=augmentation,
                                   loader=loader)
        save_segmentor(out / "segmentor.pt", seg_result.ema, seg_config, {"modality": MODALITY, "train_slices": len(slices)})
        (out / "segmentor.ckpt").unlink(missing_ok=True)
    return {"stage": "train", "train_slices": len(slices), "steps": steps, "batch_size": batch_size, "workers": workers,
            "bf16": bf16, "train_s": train_s, "images_per_s": steps * batch_size / train_s,
            "final_loss": result.history[-1]["loss"], "model": str(out / "diffusion.pt"),
            "segmentor": str(out / "segmentor.pt"), "peak_rss_diffusion_mb": peak_diffusion,
            "peak_rss_mb": peak_rss_mb(), "workers_peak_rss_mb": children_peak_rss_mb(), **sampler.result()}


def stage_sample_eval(store: str, model: str, segmentor: str, out_dir: str, max_slices: int = 16,
                      steps: int = 5, k: int = 2, seed: int = 0) -> dict:
    """The workflow's sampling job (multi-inference) then its evaluation job, on the store's test split."""
    import torch

    from segdiff.core.labels import load_label_map
    from segdiff.evaluation.run import EvaluationJob, evaluation_job
    from segdiff.pipeline.jobs import sampler_settings
    from segdiff.sampling.experiments import SampleJob, SampleRunJob, sample_run

    cfg, out = default_study(), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sampling = {"sampler": "ddim", "steps": steps, "eta": 1.0, "batch_size": cfg["sampling"]["batch_size"], "k": k}
    device, labels = torch.device("cpu"), load_label_map(LABELS)
    sample = SampleJob(model=model, stores=[store], mode="multi_inference",
                       sampler=sampler_settings(sampling, cfg["compute"]["precision"], device), k=k,
                       max_slices=max_slices, seed=seed, device=device, out=out / "multi_inference.npz")
    with RssSampler() as sampler:
        tick = time.perf_counter()
        sample_run(SampleRunJob(sample, labels, out / "multi_inference.png", reconstruction=out / "reconstruction.npz",
                                reconstruction_grid=out / "reconstruction.png", title="bench_scale"))
        sample_s = time.perf_counter() - tick
        peak_sample = peak_rss_mb()
        reset = reset_peak()
        tick = time.perf_counter()
        summary = evaluation_job(EvaluationJob(
            label="bench_scale", generation=str(out / "multi_inference.npz"), segmentor=segmentor, reference=[store],
            oracle=[], labels=labels, device=device, max_slices=max_slices, seed=seed, out_dir=out / "evaluation",
            inception_weights=cfg["evaluation"]["inception_weights"],
            poster_inception_weights=cfg["evaluation"]["poster_inception_weights"]))
        evaluate_s = time.perf_counter() - tick
        peak_evaluate = peak_rss_mb()
    return {"stage": "sample_eval", "max_slices": max_slices, "k": k, "sampler_steps": steps, "sample_s": sample_s,
            "evaluate_s": evaluate_s, "n_slices": summary["n_slices"], "n_reference": summary["n_reference"],
            "psnr": summary["psnr"], "dice_gen": summary["dice_gen"], "fid_note": summary["fid_note"],
            "peak_rss_sample_mb": peak_sample, "peak_rss_evaluate_mb": peak_evaluate if reset else None,
            "peak_rss_mb": max(peak_sample, peak_evaluate), **sampler.result()}


def _drop_cache(store: str) -> None:
    """Write back and evict the store's files from the page cache (pages not mapped anywhere)."""
    for name in ("image.npy", "mask.npy"):
        fd = os.open(Path(store) / name, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def resident_fraction(store: str) -> float | None:
    """Share of the store's image.npy in the page cache (``fincore``; None where unavailable)."""
    path = Path(store) / "image.npy"
    try:
        text = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                              capture_output=True, text=True, check=True).stdout
        return int(text.split()[0]) / max(1, path.stat().st_size)
    except (OSError, subprocess.CalledProcessError, ValueError, IndexError):
        return None


def stage_loader(store: str, batches: int = 200, batch_size: int = 16, workers: tuple[int, ...] = (1, 0),
                 cold: bool = True, seed: int = 0) -> dict:
    """img/s of :func:`step_loader` over the train split (no training: each batch is summed)."""
    import torch

    from segdiff.data.loader import LoaderSettings, step_loader
    from segdiff.data.store import SliceStore

    results = {"stage": "loader", "batches": batches, "batch_size": batch_size}
    for cache in ("warm", "cold") if cold else ("warm",):
        for w in workers:
            gc.collect()  # the previous run's memory maps: fadvise does not evict pages still mapped
            if cache == "cold":
                _drop_cache(store)
            resident = resident_fraction(store)
            slices = SliceStore([store], ["train"])  # fresh: no map of an earlier run
            # a different seed per run: the warm runs must not hand the cold ones their pages
            loader = step_loader(slices, batch_size, seed + 1000 * w + (cache == "cold"), 0, batches,
                                 LoaderSettings(workers=w))
            tick = time.perf_counter()
            first = None
            total = 0.0
            for images, masks in loader:
                total += float(images.sum()) + float(masks.sum(dtype=torch.int64))  # touch every byte
                if first is None:
                    first = time.perf_counter()
            end = time.perf_counter()
            del loader, slices
            steady = (batches - 1) * batch_size / max(end - first, 1e-9)
            results[f"{cache}_w{w}"] = {"img_per_s": steady, "img_per_s_with_startup": batches * batch_size / (end - tick),
                                        "first_batch_s": first - tick, "resident_before": resident}
            log(f"loader {cache} workers={w}: {steady:.0f} img/s (page cache held {resident if resident is None else f'{resident:.0%}'}"
                " of image.npy before)")
    results["peak_rss_mb"] = peak_rss_mb()
    results["workers_peak_rss_mb"] = children_peak_rss_mb()
    return results


STAGE_FUNCTIONS = {"build": stage_build, "train": stage_train, "sample_eval": stage_sample_eval, "loader": stage_loader}


def child_env(threads: int) -> dict:
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        env[name] = str(threads)
    env.setdefault("PYTHONPATH", "")
    src = str(REPO / "src")
    if src not in env["PYTHONPATH"].split(os.pathsep):
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env["PYTHONPATH"]]))
    return env


def run_child(stage: str, params: dict, threads: int = 1, timeout: float | None = None) -> dict:
    """Run ``stage`` with ``params`` in a fresh interpreter; return the JSON line it prints."""
    command = [sys.executable, str(Path(__file__).resolve()), "--stage", stage, "--params", json.dumps(params),
               "--threads", str(threads)]
    tick = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, env=child_env(threads), timeout=timeout)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"stage {stage} failed (exit {done.returncode}); its stderr is above. stdout tail: {done.stdout[-2000:]}")
    result = json.loads(lines[-1])
    result["wall_s"] = time.perf_counter() - tick
    return result


def child_main(stage: str, params: dict, threads: int) -> None:
    if stage != "build":
        set_threads(threads)
    result = STAGE_FUNCTIONS[stage](**params)
    print(json.dumps(result, default=float), flush=True)


# ---------------------------------------------------------------------------------------------
# driver


def measure_size(size: int, args, workdir: Path) -> dict:
    paths = store_paths(workdir, size, args.image_size)
    row: dict = {"size": size, "image_size": args.image_size}
    try:
        build = run_child("build", {"workdir": str(workdir), "size": size, "image_size": args.image_size,
                                    "slices_per_case": args.slices_per_case, "seed": args.seed,
                                    "test_fraction": args.test_fraction, "shard_files": args.shard_files}, args.threads)
        row["build"] = build
        store = build["store"]
        if "train" in args.stages or "sample_eval" in args.stages:
            log(f"n={size}: train ({args.train_steps} steps, {args.workers} workers)")
            row["train"] = run_child("train", {"store": store, "out_dir": str(paths["out"]), "steps": args.train_steps,
                                               "batch_size": args.batch_size, "workers": args.workers, "seed": args.seed},
                                     args.threads)
            log(f"n={size}: train peak RSS {row['train']['peak_rss_mb']:.0f} MB in {row['train']['wall_s']:.0f} s")
        if "sample_eval" in args.stages:
            log(f"n={size}: sample + evaluate ({args.max_slices} slices)")
            row["sample_eval"] = run_child("sample_eval", {
                "store": store, "model": row["train"]["model"], "segmentor": row["train"]["segmentor"],
                "out_dir": str(paths["out"] / "sample_eval"), "max_slices": args.max_slices, "steps": args.sample_steps,
                "seed": args.seed}, args.threads)
            log(f"n={size}: sample+evaluate peak RSS {row['sample_eval']['peak_rss_mb']:.0f} MB in "
                f"{row['sample_eval']['wall_s']:.0f} s")
        if "loader" in args.stages:
            log(f"n={size}: loader ({args.loader_batches} batches of 16; page cache as the build/train left it, then cold)")
            row["loader"] = run_child("loader", {"store": store, "batches": args.loader_batches, "batch_size": 16,
                                                 "cold": not args.no_cold, "seed": args.seed}, args.threads)
    finally:
        if not args.keep and paths["root"].exists():
            shutil.rmtree(paths["root"])
    return row


def _get(row: dict, *keys):
    for key in keys:
        if not isinstance(row, dict) or key not in row:
            return None
        row = row[key]
    return row


def _fmt(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def table(rows: list[dict], image_size: int) -> str:
    head = ["size", "train slices", "test slices", "store GB", "build s", "shard files", "peak RSS build MB", "peak RSS train MB",
            "peak RSS sample+eval MB", f"loader img/s/worker (workers=1, {image_size}², warm)", "img/s (workers=0, warm)",
            "img/s/worker (workers=1, cold)", "img/s (workers=0, cold)", "train worker peak RSS MB",
            "peak RSS loader MB (workers=0 reads in-process)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        b = r.get("build", {})
        lines.append("| " + " | ".join([
            str(r["size"]), _fmt(b.get("train_slices"), "d"), _fmt(b.get("test_slices"), "d"),
            _fmt(b.get("store_bytes", 0) / GB if b else None, ".2f"),
            _fmt(b["shards_s"] + b["store_s"] if b else None, ".0f"), b.get("shard_files", "n/a").split(" ")[0],
            _fmt(b.get("peak_rss_mb"), ".0f"),
            _fmt(_get(r, "train", "peak_rss_mb"), ".0f"), _fmt(_get(r, "sample_eval", "peak_rss_mb"), ".0f"),
            _fmt(_get(r, "loader", "warm_w1", "img_per_s"), ".0f"), _fmt(_get(r, "loader", "warm_w0", "img_per_s"), ".0f"),
            _fmt(_get(r, "loader", "cold_w1", "img_per_s"), ".0f"), _fmt(_get(r, "loader", "cold_w0", "img_per_s"), ".0f"),
            _fmt(_get(r, "train", "workers_peak_rss_mb"), ".0f"), _fmt(_get(r, "loader", "peak_rss_mb"), ".0f"),
        ]) + " |")
    return "\n".join(lines)


RSS_COLUMNS = {"train": ("train", "peak_rss_mb"), "sample_eval": ("sample_eval", "peak_rss_mb"),
               "train_workers": ("train", "workers_peak_rss_mb"), "build": ("build", "peak_rss_mb"),
               "loader_reader": ("loader", "peak_rss_mb")}


def ratios(rows: list[dict]) -> dict[str, float | None]:
    """max / min over the sizes of each peak-RSS column (None with fewer than two values)."""
    out = {}
    for name, keys in RSS_COLUMNS.items():
        values = [v for v in (_get(r, *keys) for r in rows) if v]
        out[name] = max(values) / min(values) if len(values) >= 2 else None
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 16000, 64000], help="training slices")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--slices-per-case", type=int, default=200)
    p.add_argument("--test-fraction", type=float, default=0.2, help="share of the cases in the test split")
    p.add_argument("--shard-files", choices=["auto", "distinct", "pool"], default="auto",
                   help="one shard file per case, or a pool of 16 hard-linked ones (half the peak disk); auto: "
                        "distinct where the disk holds shards + store + 15 GB")
    p.add_argument("--train-steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=2, help="loader workers of the train stage")
    p.add_argument("--max-slices", type=int, default=16, help="test slices sampled and evaluated")
    p.add_argument("--sample-steps", type=int, default=10,
                   help="DDIM steps (eta 1) of the sampling stage; 5 gives NaN images with the default study's "
                        "cosine schedule (segdiff.sampling.samplers.stochastic_step: sqrt of 1 - a_prev - sigma^2 = -6e-8 at t=999)")
    p.add_argument("--loader-batches", type=int, default=200)
    p.add_argument("--no-cold", action="store_true", help="skip the cold-cache loader figures")
    p.add_argument("--threads", type=int, default=1, help="torch / BLAS threads of each stage (1-2: comparable runs)")
    p.add_argument("--stages", nargs="+", choices=STAGES[1:], default=list(STAGES[1:]))
    p.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder, removed at the end")
    p.add_argument("--keep", action="store_true", help="keep each size's store (and the models)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="write the rows, ratios and goals here")
    p.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    p.add_argument("--params", default="{}", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.stage:
        child_main(args.stage, json.loads(args.params), args.threads)
        return 0

    temporary = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="bench_scale_")) if temporary else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    largest = max(args.sizes)
    need = (largest / 0.8) * args.image_size**2 * 5 / GB
    log(f"workdir {workdir}: {shutil.disk_usage(workdir).free / GB:.1f} GB free; the largest store takes ~{need:.1f} GB "
        f"(and its shards as much again while it is built, unless disk is short)")
    rows = []
    try:
        for size in args.sizes:
            rows.append(measure_size(size, args, workdir))
    finally:
        if temporary and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    rss = ratios(rows)
    loader_w1 = [v for v in (_get(r, "loader", "warm_w1", "img_per_s") for r in rows) if v is not None]
    loader_cold = [v for v in (_get(r, "loader", "cold_w1", "img_per_s") for r in rows) if v is not None]
    print(table(rows, args.image_size))
    print()
    print("peak RSS max/min over the sizes (goal: <= 1.10 from the smallest to the largest size):")
    for name, value in rss.items():
        if name not in ("train", "sample_eval"):
            flag = "  (informative, no goal)"
        else:
            flag = "" if value is None else ("  ok" if value <= 1.10 else "  ABOVE GOAL")
        print(f"  {name:14s} {_fmt(value, '.3f')}{flag}")
    print()
    print(f"goal: loader >= 1000 img/s per worker at 256² — measured (workers=1, {args.image_size}²): warm "
          f"{_fmt(min(loader_w1) if loader_w1 else None, '.0f')}..{_fmt(max(loader_w1) if loader_w1 else None, '.0f')}"
          f", cold {_fmt(min(loader_cold) if loader_cold else None, '.0f')}..{_fmt(max(loader_cold) if loader_cold else None, '.0f')}"
          " img/s")
    print("note: 'warm' = the page cache as the store build and the training stage left it (the build writes "
          "the whole store, so a store smaller than free RAM is fully cached; see resident_before in the JSON); "
          "'cold' = after fsync + posix_fadvise(DONTNEED) on image.npy and mask.npy.")
    print(f"threads per stage: {args.threads}; train: {args.train_steps} steps, batch {args.batch_size}, "
          f"{args.workers} loader workers; peak RSS = VmHWM of the stage's main process (mapped store pages it touched "
          "included; the loader workers' peaks are the 'train worker' column).")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows, "rss_ratio_max_min": rss, "image_size": args.image_size,
                                         "threads": args.threads, "argv": sys.argv[1:],
                                         "goals": {"rss_ratio_max": 1.10, "loader_img_per_s_per_worker": 1000}},
                                        indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
