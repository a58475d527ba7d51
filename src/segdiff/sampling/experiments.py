"""The three generation experiments of the study, and their output files.

- ``reconstruction``: one generation per test mask of the model's own modality;
- ``multi_inference``: ``k`` generations per test mask. Generation 1 of every mask has the seed
  a reconstruction would use, so the workflow samples once and writes the reconstruction file
  from it (``reconstruction=`` of :func:`run_generation`) instead of sampling the same thing twice;
- ``multimodal``: ``k`` generations for each test mask of another modality (e.g. CT) through
  this model (e.g. MRI); organs the model never saw in training (``meta["classes_seen"]``)
  become background first, and the slices left with fewer than ``min_foreground`` organ pixels
  (``preprocess.min_foreground``, the rule that kept them in the shards) are dropped: they are
  neither sampled nor evaluated, and ``info["dropped_empty"]`` counts them.

The files they write, and the merge of a run's chunk files: :mod:`segdiff.sampling.files`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import zipfile
from dataclasses import asdict, dataclass
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from segdiff.core.atomic import atomic_path
from segdiff.sampling.chunks import chunk_bounds
from segdiff.data.dataset import SliceSet, stratified_subset
from segdiff.models.diffusion import load_diffusion
from segdiff.core.errors import InputError
from segdiff.core.labels import LabelMap
from segdiff.sampling.files import MODES, draw_grids, subset_digest, write_generation
from segdiff.sampling.samplers import SamplerSettings, generate, sample_seed
from segdiff.data.slicing import organ_pixels
from segdiff.data.store import SliceStore

__all__ = ["SampleJob", "SampleRunJob", "run_generation", "sample_run", "subset_index", "sample_chunk"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SampleJob:
    """One sampling job: part ``chunk`` of ``chunks`` of a run's test subset through a diffusion model.

    Attributes:
        model: the diffusion model file (:func:`segdiff.models.diffusion.save_diffusion`).
        stores: slice stores whose ``test`` split holds the masks (and the originals).
        mode: one of :data:`MODES`.
        sampler: the sampler, its batch and its precision (``bf16`` already decided for ``device``).
        k: generations per mask (a reconstruction samples 1 whatever ``k``).
        max_slices: size of the seeded, stratified test subset (0: every test slice).
        seed: the run seed: it picks the subset and seeds every generation (:func:`sample_seed`).
        device: where the model runs.
        out: the chunk file (:func:`sample_chunk`) or, for :func:`sample_run`, the run's generation file.
        chunk: the part, 0-based (:func:`segdiff.sampling.chunks.chunk_bounds`).
        chunks: parts the run is split into (1: the whole subset).
        min_foreground: multi-modal only: slices with fewer organ pixels once the organs the model never saw are
            background are dropped (``preprocess.min_foreground``; 0 keeps every slice).
        source: multi-modal only: the modality the masks and the ``original`` slices come from (``ct``),
            recorded in the file's ``info["source"]``.
    """

    model: str | Path
    stores: Sequence[str | Path]
    mode: str
    sampler: SamplerSettings
    k: int
    max_slices: int
    seed: int
    device: torch.device
    out: str | Path
    chunk: int = 0
    chunks: int = 1
    min_foreground: int = 0
    source: str = ""


@dataclass(frozen=True)
class SampleRunJob:
    """A run's sampling in one job (:func:`sample_run`): the whole test subset, then the PNG grids.

    Attributes:
        sample: what to sample (``chunk`` 0 of ``chunks`` 1); its ``out`` is the run's generation file.
        labels: the label map the grids colour the masks with.
        grid: the PNG grid of the generation file.
        reconstruction: with ``mode`` multi-inference, the reconstruction file taken from it (generation 1).
        reconstruction_grid: the PNG grid of the reconstruction file.
        title: the grids' title (after the mode).
    """

    sample: SampleJob
    labels: LabelMap
    grid: str | Path
    reconstruction: str | Path | None = None
    reconstruction_grid: str | Path | None = None
    title: str = ""


def run_generation(
    model_path: str | Path,
    test: SliceSet,
    mode: str,
    settings: SamplerSettings,
    seed: int,
    device: torch.device,
    out: str | Path,
    k: int = 1,
    reconstruction: str | Path | None = None,
    min_foreground: int = 0,
    source: str = "",
) -> dict:
    """Sample ``mode`` for every slice of ``test`` and write ``out`` (.npz) atomically; returns the arrays.

    Args:
        model_path: the diffusion model file (:func:`segdiff.models.diffusion.save_diffusion`).
        test: the test slices whose masks are sampled (for multi-modal, slices of the source modality).
        mode: one of :data:`MODES`.
        settings: the sampler, its batch and its precision.
        seed: the run seed: every generation's seed derives from it (:func:`sample_seed`).
        device: where the model runs.
        out: the generation file to write.
        k: generations per mask (a reconstruction samples 1 whatever ``k``).
        reconstruction: multi-inference only: generation 1 of every mask is also written there as the
            reconstruction experiment's file (it appears together with ``out``); None: no such file.
        min_foreground: multi-modal only: slices left with fewer organ pixels once the organs the model never
            saw are background are dropped (counted in ``info["dropped_empty"]``).
        source: multi-modal only: the modality of ``test`` (``ct``), recorded as ``info["source"]``.

    Returns:
        The arrays written to ``out`` (see the module docstring; ``info`` as a JSON string).

    Raises:
        ValueError: an unknown ``mode``, or ``reconstruction`` with a mode other than multi-inference.
        InputError: masks that hold an id the model does not know.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r} (expected one of {MODES})")
    if reconstruction is not None and mode != "multi_inference":
        raise ValueError("a reconstruction file can only be taken from a multi-inference run")
    arrays, _ = _generation_arrays(model_path, test, mode, settings, seed, device, k, min_foreground, source)
    write_generation(arrays, out, reconstruction)
    return arrays


def _generation_arrays(model_path: str | Path, test: SliceSet, mode: str, settings: SamplerSettings, seed: int,
                       device: torch.device, k: int, min_foreground: int = 0,
                       source: str = "") -> tuple[dict, np.ndarray]:
    """The arrays of a generation file for the slices of ``test`` (see the module docstring), and the positions
    in ``test`` of the slices they hold (all but those a multi-modal run dropped)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r} (expected one of {MODES})")
    model, scheduler_config, meta = load_diffusion(model_path, device)
    num_classes = model.config.num_classes
    if len(test) and int(test.mask.max()) >= num_classes:
        raise InputError(model_path, f"model knows {num_classes - 1} organ classes, masks hold id {int(test.mask.max())}")
    dropped = []
    if mode == "multimodal" and meta.get("classes_seen"):
        # the target model never saw these organs (e.g. bladder in AMOS MRI): they become background
        unseen = ~np.isin(test.mask, meta["classes_seen"])
        dropped = sorted(int(c) for c in np.unique(test.mask[unseen]))
        if dropped:
            log.info("%s: organ ids %s absent from the model's training masks set to background (%d pixels)",
                     model_path, dropped, int(unseen.sum()))
            test = SliceSet(test.image, np.where(unseen, 0, test.mask).astype(np.uint8), test.case, test.slice, test.view)
    kept, dropped_empty = np.arange(len(test)), 0
    if mode == "multimodal":
        # a slice whose organs were all (or all but a few pixels) unseen has nothing left to generate from
        # organ pixels counted as the slicing counted them when it kept the slice (the model's body id is no organ)
        kept = np.flatnonzero(organ_pixels(test.mask, meta.get("body_id")) >= min_foreground)
        dropped_empty = len(test) - len(kept)
        if dropped_empty:
            log.info("%s: %d of %d source slices dropped: fewer than %d organ pixels once unseen organs are background",
                     model_path, dropped_empty, len(test), min_foreground)
            test = test.take(kept)
    k = 1 if mode == "reconstruction" else k
    # one seed per (case, view, slice, k): independent of batch size and job order
    seeds = [sample_seed(seed, f"{c}/{v}", s, j) for c, v, s in zip(test.case, test.view, test.slice) for j in range(k)]
    masks = np.repeat(test.mask, k, axis=0)
    generated = generate(model, scheduler_config, masks, seeds, num_classes, settings, device, desc=f"{mode} {Path(model_path).stem}")
    return {
        "generated": generated.reshape(len(test), k, *test.mask.shape[1:]),
        "original": test.image, "mask": test.mask, "case": test.case, "slice": test.slice, "view": test.view,
        "seed": np.int64(seed),
        "info": json.dumps({"mode": mode, "model": str(model_path), "model_meta": meta, "k": k, "sampler": asdict(settings),
                            **({"source": source} if mode == "multimodal" else {}),
                            "classes_set_to_background": dropped, "dropped_empty": dropped_empty}),
    }, kept


def sample_run(job: SampleRunJob) -> None:
    """A run's sampling in one job: the (seeded, stratified) test subset of the slice stores through
    the model, its ``.npz`` file(s) and their PNG grids. (The workflow splits it:
    :func:`sample_chunk` per part, then :func:`gather_run`; the files are the same.)

    Args:
        job: the run; ``job.sample`` must be the whole subset (``chunks`` 1).
    """
    s = job.sample
    if (s.chunk, s.chunks) != (0, 1):
        raise ValueError(f"sample_run samples the whole subset (chunk 0 of 1), got chunk {s.chunk} of {s.chunks}")
    test = SliceStore(s.stores, ["test"]).subset(s.max_slices, s.seed)
    arrays = run_generation(s.model, test, s.mode, s.sampler, s.seed, s.device, s.out, k=s.k,
                            reconstruction=job.reconstruction, min_foreground=s.min_foreground, source=s.source)
    draw_grids(arrays, job.labels, job.grid, job.reconstruction_grid, job.title)


def subset_index(store: SliceStore, max_slices: int, seed: int) -> np.ndarray:
    """Positions in ``store`` of the slices :meth:`SliceStore.subset` takes (the same rule), without reading any.

    Args:
        store: the slice store (e.g. its ``test`` split).
        max_slices: size of the seeded, stratified subset (0: every slice, as for a store of at most that many).
        seed: the run seed (it picks the subset).

    Returns:
        Sorted int positions into ``store``.
    """
    if max_slices <= 0 or len(store) <= max_slices:
        return np.arange(len(store))
    return stratified_subset(store.case, store.view, max_slices, seed)


def sample_chunk(job: SampleJob) -> None:
    """One sampling job of a run split into ``job.chunks``: part ``job.chunk`` (0-based, :func:`chunk_bounds`)
    of the test subset :func:`sample_run` would sample, and only its slices are read.

    ``job.out`` is a generation file of that part plus ``part`` (JSON: chunk, chunks, start, stop,
    total = the subset's size, subset = a fingerprint of the whole subset's slices, dropped = the
    [subset position, case, view, slice] of each slice a multi-modal run dropped) for :func:`merge_chunks`.

    Args:
        job: the part to sample and where.
    """
    chunk, chunks = job.chunk, job.chunks
    if not 0 <= chunk < chunks:
        raise ValueError(f"chunk {chunk} is not one of 0..{chunks - 1}")
    store = SliceStore(job.stores, ["test"])
    index = subset_index(store, job.max_slices, job.seed)
    k = 1 if job.mode == "reconstruction" else job.k
    start, stop = chunk_bounds(len(index), chunks, k, job.sampler.batch_size)[chunk]
    log.info("chunk %d of %d: subset slices %d..%d of %d", chunk + 1, chunks, start, stop - 1, len(index))
    arrays, kept = _generation_arrays(job.model, store.take(index[start:stop]), job.mode, job.sampler, job.seed,
                                      job.device, k, job.min_foreground, job.source)
    dropped = [start + int(i) for i in np.setdiff1d(np.arange(stop - start), kept)]  # subset positions
    part = {"chunk": chunk, "chunks": chunks, "start": start, "stop": stop, "total": len(index),
            "subset": subset_digest(store.case[index], store.view[index], store.slice[index]),
            "dropped": [[i, str(store.case[index[i]]), str(store.view[index[i]]), int(store.slice[index[i]])]
                        for i in dropped]}
    write_generation({**arrays, "part": json.dumps(part)}, job.out)


