"""Benchmark: slicing the phantom cohort vs a plain nibabel load of the same volumes.

Both are timed in this one process on the same files (median of --repeats runs, after a warm-up),
and the ratio is printed; goal <= 1.5x. Peak memory of slicing the largest volume is the peak of the
array allocations (tracemalloc traces numpy buffers), against the size of that volume as
float32; goal <= 3x. The same ratio is measured on one native-resolution phantom CT (by default
512 x 512 x 120 voxels of 0.7 x 0.7 x 5 mm sliced at 256 x 256): from its ``Volume`` in memory (the
volume itself counted) and from its NIfTI files (load + slice, as the workflow job does).

    python bench/bench_slicing.py [--n-ct 8 --n-mri 8 --shape 96 80 48 --spacing 4 4 6] [--json out.json]
                                  [--native-shape 512 512 120 --native-spacing 0.7 0.7 5 --native-size 256 | --no-native]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np

from segdiff.core.labels import load_label_map
from segdiff.sources.phantom import generate_case, write_phantom_dataset
from segdiff.data.shards import write_case_shards
from segdiff.data.slicing import normalise, slice_volume
from segdiff.sources.volumes import load_case

PRE = dict(image_size=32, min_foreground=16, ct_window=(-175, 250), mri_percentiles=(0.5, 99.5), previews_per_case=1)
VIEWS = ("axial", "coronal", "sagittal")


def plain_load(cases, root):
    for c in cases:
        np.asanyarray(nib.load(root / c["image"]).dataobj)
        np.asanyarray(nib.load(root / c["label"]).dataobj)


def slice_all(cases, root, out, labels):
    for c in cases:
        vol = load_case(root / c["image"], root / c["label"], labels)
        write_case_shards(vol, c["modality"], {v: out / v / f"{c['case']}.npz" for v in VIEWS},
                          {v: out / v / "previews" / c["case"] for v in VIEWS}, **PRE)


def slice_in_memory(cases, root, labels):
    for c in cases:
        vol = load_case(root / c["image"], root / c["label"], labels)
        image = normalise(vol.image, c["modality"], PRE["ct_window"], PRE["mri_percentiles"], out=vol.image)
        for view in VIEWS:
            slice_volume(vol, c["modality"], view, PRE["image_size"], PRE["min_foreground"], normalised=image)


def timed(fn, repeats):
    fn()  # warm-up: page cache, imports, first-call costs
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peak_memory(case, root, out, labels):
    """Peak bytes allocated (numpy buffers, traced by tracemalloc) while slicing one case."""
    tracemalloc.start()
    slice_all([case], root, out, labels)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def traced_peak(fn):
    """Peak bytes of the array allocations made while ``fn`` runs."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def native_peaks(shape, spacing, size, tmp):
    """Peak memory over the float32 volume while slicing one native-resolution phantom CT into 3 views at
    ``size``: (from the Volume in memory, image and label counted; loading it from NIfTI and slicing)."""
    root, out = tmp / "native", tmp / "native_slices"
    root.mkdir()
    for img, name in zip(generate_case("amos_0001", "ct", shape, spacing, seed=1), ("image", "label")):
        nib.save(img, root / f"{name}.nii.gz")
    labels, pre = load_label_map("amos15"), {**PRE, "image_size": size, "previews_per_case": 2}

    def load():
        return load_case(root / "image.nii.gz", root / "label.nii.gz", labels)

    def slice_(vol):
        write_case_shards(vol, "ct", {v: out / v / "case.npz" for v in VIEWS}, {v: out / v / "previews" / "case" for v in VIEWS}, **pre)

    vol = load()
    in_memory = traced_peak(lambda: slice_(vol)) + vol.image.nbytes + vol.label.nbytes
    vol = None  # freed before the second run
    from_nifti = traced_peak(lambda: slice_(load()))
    volume_bytes = int(np.prod(shape)) * 4
    return in_memory / volume_bytes, from_nifti / volume_bytes


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-ct", type=int, default=8)
    ap.add_argument("--n-mri", type=int, default=8)
    ap.add_argument("--shape", type=int, nargs=3, default=(96, 80, 48))
    ap.add_argument("--spacing", type=float, nargs=3, default=(4.0, 4.0, 6.0))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--native-shape", type=int, nargs=3, default=(512, 512, 120))
    ap.add_argument("--native-spacing", type=float, nargs=3, default=(0.7, 0.7, 5.0))
    ap.add_argument("--native-size", type=int, default=256, help="image_size of the native-resolution slices")
    ap.add_argument("--no-native", action="store_true", help="skip the native-resolution peak-memory case")
    ap.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        root, out = Path(tmp) / "phantom", Path(tmp) / "slices"
        cases = write_phantom_dataset(root, args.n_ct, args.n_mri, tuple(args.shape), tuple(args.spacing), seed=1234)
        labels = load_label_map("amos15")
        t_load = timed(lambda: plain_load(cases, root), args.repeats)
        t_slice = timed(lambda: slice_all(cases, root, out, labels), args.repeats)
        t_memory = timed(lambda: slice_in_memory(cases, root, labels), args.repeats)
        largest = max(cases, key=lambda c: np.prod(nib.load(root / c["image"]).shape))
        volume_bytes = int(np.prod(nib.load(root / largest["image"]).shape)) * 4
        peak = peak_memory(largest, root, out, labels)
        native = None if args.no_native else native_peaks(tuple(args.native_shape), tuple(args.native_spacing), args.native_size, Path(tmp))
    figures = {
        "cases": len(cases), "shape": list(args.shape), "views": len(VIEWS),
        "plain_load_s": round(t_load, 4), "slicing_s": round(t_slice, 4), "ratio": round(t_slice / t_load, 3),
        "in_memory_slicing_s": round(t_memory, 4), "in_memory_ratio": round(t_memory / t_load, 3),
        "ratio_goal": 1.5, "peak_mem_mb": round(peak / 2**20, 2), "largest_volume_mb": round(volume_bytes / 2**20, 2),
        "peak_over_volume": round(peak / volume_bytes, 3), "peak_goal": 3.0,
    }
    print(f"{len(cases)} volumes {tuple(args.shape)}: plain nibabel load {t_load:.3f} s")
    print(f"  slicing, load + validate + normalise + 3 views, in memory: {t_memory:.3f} s = {figures['in_memory_ratio']:.2f}x")
    print(f"  slicing with writing shards + PNG previews (the workflow job): {t_slice:.3f} s = {figures['ratio']:.2f}x (goal <= 1.5x)")
    print(f"peak memory while slicing the largest volume: {figures['peak_mem_mb']:.1f} MiB = "
          f"{figures['peak_over_volume']:.2f}x its float32 size ({figures['largest_volume_mb']:.1f} MiB; goal <= 3x)")
    if native is not None:
        figures.update(native_shape=list(args.native_shape), native_size=args.native_size,
                       native_peak_over_volume=round(native[0], 3), native_nifti_peak_over_volume=round(native[1], 3))
        print(f"native-resolution CT {tuple(args.native_shape)} ({' x '.join(map(str, args.native_spacing))} mm) -> 3 views at "
              f"{args.native_size}: peak {native[0]:.2f}x its float32 size from memory (volume included), "
              f"{native[1]:.2f}x loading it from NIfTI (goal <= 3x)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    main()
