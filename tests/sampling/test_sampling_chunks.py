"""Sampling split over jobs (sampling.chunks, Snakemake scatter/gather): the merged files equal an
unsplit run's array for array, parts that do not fit together are refused, and the workflow plans
one sampling job per chunk plus a gather per run."""

from __future__ import annotations

import json
import random
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from tiny import SCHED, perturbed_model
from studies import TINY, TINY_MODEL, job_counts, snakemake

from segdiff.models.diffusion import save_diffusion
from segdiff.core.errors import InputError
from segdiff.core.labels import load_label_map
from segdiff.pipeline.jobs import sampler_settings
from segdiff.sampling import files
from segdiff.sampling.chunks import chunk_bounds, scatter_item
from segdiff.sampling.experiments import SampleJob, SampleRunJob, sample_chunk, sample_run, subset_index
from segdiff.sampling.files import GatherJob, gather_run, merge_chunks, read_generation
from segdiff.data.shards import build_manifest
from segdiff.data.slicing import Shard
from segdiff.data.store import SliceStore, write_store

SAMPLING = {"sampler": "ddim", "steps": 2, "eta": 1.0, "batch_size": 4, "k": 2}  # batch blocks of 2 slices
SAMPLER = sampler_settings(SAMPLING, "fp32", torch.device("cpu"))
#: every sampler the schema allows but DDPM (all 1000 steps: tests/models/test_diffusion.py covers it)
SAMPLERS = {name: sampler_settings({**SAMPLING, "sampler": name, "steps": 3}, "fp32", torch.device("cpu"))
            for name in ("ddim", "dpmpp_2m", "dpmpp_2m_sde")}
MAX_SLICES = 9
CHUNKS = 3
FILES = ("multi_inference", "reconstruction")


def make_stores(root, size=16):
    """Test slices of three cases in two views (a model on view "all"); organ 3 only in case t0's axial slices."""
    cases = {"t0": ("test", 5), "t1": ("test", 4), "t2": ("test", 6), "x": ("train", 3)}
    rng = np.random.default_rng(0)
    stores = []
    for view in ("axial", "coronal"):
        paths = {}
        for case, (_, n) in cases.items():
            mask = np.zeros((n, size, size), np.uint8)
            mask[:, 3:8, 3:10] = 1
            mask[:, 9:14, 6:12] = 2
            if case == "t0" and view == "axial":
                mask[:, 2:5, 11:15] = 3
            image = (0.3 * (mask == 1) + 0.7 * (mask == 2) + rng.normal(0, 0.05, mask.shape)).clip(0, 1)
            paths[case] = root / view / f"{case}.npz"
            paths[case].parent.mkdir(parents=True, exist_ok=True)
            Shard(image=image.astype(np.float32), mask=mask, slice=np.arange(n, dtype=np.int32), pixel_mm=2.0).save(paths[case])
        rows = pd.DataFrame({"case": list(cases), "modality": "ct", "split": [s for s, _ in cases.values()]})
        stores.append(write_store(build_manifest(rows, paths, view), root / view / "store"))
    return stores


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("chunks")
    model = root / "model.pt"
    save_diffusion(model, perturbed_model(), SCHED, {"classes_seen": [0, 1, 2]})  # random weights: seeds matter
    return root, model, make_stores(root)


def run_files(folder, mode):
    name = "multi_inference" if mode == "multi_inference" else "multimodal"
    files = {"samples": folder / f"{name}.npz", "grid": folder / f"{name}.png"}
    if mode == "multi_inference":
        files.update(reconstruction=folder / "reconstruction.npz", reconstruction_grid=folder / "reconstruction.png")
    return files


def sample_job(model, stores, mode, seed, out, chunk=0, chunks=1, sampler=SAMPLER):
    return SampleJob(model=model, stores=stores, mode=mode, sampler=sampler, k=SAMPLING["k"], max_slices=MAX_SLICES,
                     seed=seed, device=torch.device("cpu"), out=out, chunk=chunk, chunks=chunks)


def sample_chunks(setup, mode, folder, chunks=CHUNKS, seed=5, model=None, only=None, sampler=SAMPLER):
    """The chunk files of a run (those numbered ``only``, 0-based, when given)."""
    root, default_model, stores = setup
    parts = [folder / f"part_{i + 1}-of-{chunks}.npz" for i in range(chunks)]
    for i, part in enumerate(parts):
        if only is None or i in only:
            sample_chunk(sample_job(model or default_model, stores, mode, seed, part, i, chunks, sampler))
    return parts


def assert_same_generation(merged, unsplit, merged_path, unsplit_path):
    assert list(merged) == list(unsplit)
    for key in merged:
        if key == "info":
            a, b = dict(merged["info"]), dict(unsplit["info"])
            if "taken_from" in a:  # the reconstruction names its multi-inference file
                assert (a.pop("taken_from"), b.pop("taken_from")) == (str(merged_path), str(unsplit_path))
            assert a == b
        else:
            assert merged[key].dtype == unsplit[key].dtype and np.array_equal(merged[key], unsplit[key]), key


@pytest.mark.parametrize("sampler", list(SAMPLERS))
@pytest.mark.parametrize("mode", ["multi_inference", "multimodal"])
def test_chunks_merge_to_the_unsplit_run_and_read_only_their_rows(setup, tmp_path, monkeypatch, mode, sampler):
    root, model, stores = setup
    whole, split = run_files(tmp_path / "whole", mode), run_files(tmp_path / "split", mode)
    labels = load_label_map("amos15")
    settings = SAMPLERS[sampler]
    sample_run(SampleRunJob(sample_job(model, stores, mode, 5, whole["samples"], sampler=settings), labels, whole["grid"],
                            whole.get("reconstruction"), whole.get("reconstruction_grid"), title="t"))
    reads = []
    real_read = SliceStore.read
    monkeypatch.setattr(SliceStore, "read", lambda self, index: reads.append(len(index)) or real_read(self, index))
    parts = sample_chunks(setup, mode, tmp_path / "parts", sampler=settings)
    assert reads == [4, 4, 1]  # each chunk reads its part only: 5 batch blocks of 2 slices split 2, 2, 1
    random.Random(0).shuffle(parts)  # the gather sorts them
    gather_run(GatherJob(parts, labels, split["samples"], split["grid"], split.get("reconstruction"),
                         split.get("reconstruction_grid"), title="t"))
    for name in [f for f in ("samples", "reconstruction") if f in whole]:
        unsplit, merged = read_generation(whole[name]), read_generation(split[name])
        assert_same_generation(merged, unsplit, merged_path=split["samples"], unsplit_path=whole["samples"])
    assert all(split[grid].stat().st_size > 5_000 for grid in split if grid.endswith("grid"))
    unsplit = read_generation(whole["samples"])
    assert len(unsplit["case"]) == MAX_SLICES and unsplit["generated"].shape[1] == 2
    if mode == "multimodal":
        # organ 3 lies in the first chunk only: the merged record is the union of the parts'
        assert unsplit["info"]["classes_set_to_background"] == [3]
        assert [read_generation(p)["info"]["classes_set_to_background"] for p in sorted(parts)] == [[3], [], []]


def test_chunk_bounds_split_batch_blocks_like_array_split():
    for n, chunks, k, batch in [(9, 3, 2, 4), (1024, 8, 4, 64), (32, 3, 4, 64), (10, 4, 1, 1), (0, 2, 4, 8), (7, 1, 3, 5)]:
        bounds = chunk_bounds(n, chunks, k, batch)
        assert len(bounds) == chunks and bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))  # contiguous, in order
        assert all(start * k % batch == 0 for start, _ in bounds)  # every chunk starts on a batch of the unsplit run
    assert chunk_bounds(10, 4, 1, 1) == [(int(p[0]), int(p[-1]) + 1) for p in np.array_split(np.arange(10), 4)]
    assert chunk_bounds(1024, 8, 4, 64) == [(128 * i, 128 * (i + 1)) for i in range(8)]  # the AMOS config
    assert scatter_item("2-of-8") == (2, 8)  # Snakemake's scatteritem wildcard
    assert chunk_bounds(32, 3, 4, 64) == [(0, 16), (16, 32), (32, 32)]  # fewer blocks than chunks: one empty part
    with pytest.raises(ValueError):
        chunk_bounds(5, 0, 1, 1)


def test_subset_index_is_the_store_subset(setup):
    store = SliceStore(setup[2], ["test"])
    for max_slices in (0, 5, MAX_SLICES, 100):
        taken = store.take(subset_index(store, max_slices, 5))
        subset = store.subset(max_slices, 5)
        assert np.array_equal(taken.image, subset.image) and list(taken.case) == list(subset.case)


def test_merge_refuses_parts_that_do_not_fit_together(setup, tmp_path):
    parts = sample_chunks(setup, "multi_inference", tmp_path / "a")
    out = tmp_path / "merged.npz"

    def refused(given, culprit):
        """The merge's message: '<culprit file>: <problem>'."""
        with pytest.raises(InputError) as err:
            merge_chunks(given, out)
        assert str(err.value).startswith(f"{culprit}: "), str(err.value)
        return str(err.value)

    assert "missing" in refused([parts[0], parts[2]], parts[2])  # a gap: names the part after it
    assert "missing" in refused(parts[:2], parts[1])  # the last chunk: names the last part given
    assert "given twice" in refused([parts[0], parts[1], parts[1], parts[2]], parts[1])
    # a part of another seed, another model, another chunk count
    other_seed = sample_chunks(setup, "multi_inference", tmp_path / "b", seed=6, only=[1])
    assert "seed" in refused([parts[0], other_seed[1], parts[2]], other_seed[1])
    model2 = tmp_path / "model2.pt"
    shutil.copy(setup[1], model2)
    other_model = sample_chunks(setup, "multi_inference", tmp_path / "c", model=model2, only=[2])
    assert "'model'" in refused([parts[0], parts[1], other_model[2]], other_model[2])
    halves = sample_chunks(setup, "multi_inference", tmp_path / "d", chunks=2, only=[1])
    assert "chunk count" in refused([parts[0], halves[1]], halves[1])
    assert not out.exists()  # nothing written by a refused merge
    # an unsplit generation file is not a chunk
    merge_chunks(parts, out)
    assert "not a sampling chunk" in refused([out], out)


def test_workflow_plans_a_sampling_job_per_chunk_and_a_gather_per_run(tmp_path):
    config = {**TINY, "diffusion": {"runs": ["ct/axial", "mri/all"], "model": TINY_MODEL},
              "sampling": {"chunks": 3, "multimodal": ["ct>mri/all"]}}
    planned = job_counts(snakemake(tmp_path / "plan", config, "-n"))
    assert planned["sample_diffusion"] == 6 and planned["sample_multimodal"] == 3
    assert planned["gather_samples"] == 2 and planned["gather_multimodal"] == 1 and planned["evaluate"] == 3
    # --set-scatter overrides the config's count
    planned = job_counts(snakemake(tmp_path / "plan", config, "-n", "--set-scatter", "sample=2"))
    assert planned["sample_diffusion"] == 4 and planned["sample_multimodal"] == 2




def make_cross_stores(root, size=16):
    """CT test slices for an MRI model that never saw organ 3: in case t0 every third slice holds organ 3 alone
    (empty once it is background), in t1 slice 2 keeps only 2 pixels of organ 1 (under min_foreground 4)."""
    cases = {"t0": ("test", 6), "t1": ("test", 5), "x": ("train", 3)}
    rng = np.random.default_rng(1)
    paths = {}
    for case, (_, n) in cases.items():
        mask = np.zeros((n, size, size), np.uint8)
        mask[:, 3:8, 3:10] = 1
        mask[:, 9:14, 6:12] = 2
        mask[:, 2:5, 11:15] = 3
        if case == "t0":
            mask[::3] = np.where(mask[::3] == 3, 3, 0)
        if case == "t1":
            mask[2] = np.where(mask[2] == 3, 3, 0)
            mask[2, 3, 3:5] = 1
        image = (0.3 * (mask == 1) + 0.7 * (mask == 2) + rng.normal(0, 0.05, mask.shape)).clip(0, 1)
        paths[case] = root / "axial" / f"{case}.npz"
        paths[case].parent.mkdir(parents=True, exist_ok=True)
        Shard(image=image.astype(np.float32), mask=mask, slice=np.arange(n, dtype=np.int32), pixel_mm=2.0).save(paths[case])
    rows = pd.DataFrame({"case": list(cases), "modality": "ct", "split": [s for s, _ in cases.values()]})
    return [write_store(build_manifest(rows, paths, "axial"), root / "axial" / "store")]


def test_multimodal_drops_slices_left_empty_and_chunks_still_merge(setup, tmp_path, monkeypatch):
    _, model, _ = setup  # classes_seen [0, 1, 2]
    stores = make_cross_stores(tmp_path / "slices")
    labels = load_label_map("amos15")
    grids = []
    real_grid = files.generation_grid_figure
    monkeypatch.setattr(files, "generation_grid_figure",
                        lambda *args, **kwargs: grids.append((args, kwargs)) or real_grid(*args, **kwargs))

    def job(out, chunk=0, chunks=1, min_foreground=4):
        return SampleJob(model=model, stores=stores, mode="multimodal", sampler=SAMPLER, k=2, max_slices=0, seed=5,
                         device=torch.device("cpu"), out=out, chunk=chunk, chunks=chunks, min_foreground=min_foreground,
                         source="ct")

    whole = run_files(tmp_path / "whole", "multimodal")
    sample_run(SampleRunJob(job(whole["samples"]), labels, whole["grid"], title="t"))
    unsplit = read_generation(whole["samples"])
    kept = [f"{c}/{s}" for c, s in zip(unsplit["case"], unsplit["slice"])]
    assert kept == ["t0/1", "t0/2", "t0/4", "t0/5", "t1/0", "t1/1", "t1/3", "t1/4"]  # t0/0, t0/3, t1/2 dropped
    assert unsplit["info"]["dropped_empty"] == 3 and unsplit["generated"].shape == (8, 2, 16, 16)
    assert unsplit["info"]["source"] == "ct"  # the file says what its originals are
    assert (np.count_nonzero(unsplit["mask"].reshape(8, -1), axis=1) >= 4).all()
    # the grid's first column: the CT slices the masks come from
    (args, kwargs), = grids
    assert args[0] is unsplit["original"] or np.array_equal(args[0], unsplit["original"])
    assert kwargs["original_title"] == "CT (source)"
    # split in 3 (11 slices: batch blocks of 2 -> 4, 4, 3): parts 1 and 3 hold fewer slices than their bounds
    parts = [tmp_path / "parts" / f"part_{i + 1}-of-3.npz" for i in range(3)]
    for i, part in enumerate(parts):
        sample_chunk(job(part, i, 3))
    assert [read_generation(p)["info"]["dropped_empty"] for p in parts] == [2, 0, 1]
    split = run_files(tmp_path / "split", "multimodal")
    gather_run(GatherJob(parts[::-1], labels, split["samples"], split["grid"], title="t"))
    assert_same_generation(read_generation(split["samples"]), unsplit, split["samples"], whole["samples"])
    assert grids[-1][1]["original_title"] == "CT (source)"
    # a part whose record of its dropped slices is lost no longer adds up to its bounds
    with np.load(parts[0]) as z:
        tampered = {key: z[key] for key in z.files}
    record = json.loads(str(tampered["part"]))
    np.savez(parts[0], **{**tampered, "part": json.dumps({**record, "dropped": record["dropped"][:1]})})
    with pytest.raises(InputError, match="lists 1 dropped"):
        merge_chunks(parts, tmp_path / "merged.npz")
    # ... nor a part whose dropped slices are not the ones it lacks
    wrong = [[pos, case, view, index + 1] for pos, case, view, index in record["dropped"]]
    np.savez(parts[0], **{**tampered, "part": json.dumps({**record, "dropped": wrong})})
    with pytest.raises(InputError, match="not the subset they record"):
        merge_chunks(parts, tmp_path / "merged.npz")
    # min_foreground 0 drops only nothing: a mask left empty is still sampled
    zero = sample_run(SampleRunJob(job(tmp_path / "zero.npz", min_foreground=0), labels, tmp_path / "zero.png", title="t"))
    assert zero is None and read_generation(tmp_path / "zero.npz")["info"]["dropped_empty"] == 0
