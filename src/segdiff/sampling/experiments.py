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

Output ``.npz`` (one per run and mode): ``generated`` float32 (N, k, H, W) in [0, 1],
``original`` float32 (N, H, W) (the real slice the mask belongs to; for multi-modal it is of the
*source* modality), ``mask`` uint8 (N, H, W), ``case`` (N,) str, ``slice`` (N,) int32,
``view`` (N,) str, ``seed`` int, and ``info`` (a JSON string: mode, model, sampler settings, and for a
multi-modal run ``source``, the modality of its masks and originals, ``classes_set_to_background`` and
``dropped_empty``, the source slices it dropped).

A run's sampling can be split over jobs (``sampling.chunks``, Snakemake's scatter/gather):
:func:`sample_chunk` samples one contiguous part of the test subset (:func:`chunk_bounds`) into a
*chunk file* (a generation file of that part plus ``part``, a JSON record of where it sits in the
subset), and :func:`merge_chunks` checks the parts fit together and writes the run's files, equal
array for array (``info`` included) to what the unsplit :func:`sample_run` writes. A multi-modal
chunk holds fewer slices than its bounds when it dropped some; its ``part`` lists them
(``dropped``: subset position, case, view, slice) so the merge still checks the whole subset.
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
from segdiff.report.figures import generation_grid_figure
from segdiff.core.labels import LabelMap
from segdiff.sampling.samplers import SamplerSettings, generate, sample_seed
from segdiff.data.slicing import organ_pixels
from segdiff.data.store import SliceStore

__all__ = ["MODES", "SampleJob", "SampleRunJob", "GatherJob", "run_generation", "read_generation",
           "first_column_title", "sample_run",
           "subset_index", "sample_chunk", "merge_chunks", "gather_run"]

log = logging.getLogger(__name__)

MODES = ("reconstruction", "multi_inference", "multimodal")


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


@dataclass(frozen=True)
class GatherJob:
    """The gather job of a run split into chunks (:func:`gather_run`).

    Attributes:
        parts: the chunk files of the run (:func:`sample_chunk`), in any order.
        labels: the label map the grids colour the masks with.
        out: the run's generation file.
        grid: its PNG grid.
        reconstruction: from a multi-inference run, the reconstruction file taken from it (generation 1).
        reconstruction_grid: the PNG grid of the reconstruction file.
        title: the grids' title (after the mode).
    """

    parts: Sequence[str | Path]
    labels: LabelMap
    out: str | Path
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
    _write_generation(arrays, out, reconstruction)
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


def _write_generation(arrays: dict, out: str | Path, reconstruction: str | Path | None = None) -> None:
    """Write ``arrays`` to ``out`` and, with ``reconstruction``, generation 1 of each mask there; both
    files appear together, or neither."""
    with contextlib.ExitStack() as pending:
        np.savez(pending.enter_context(atomic_path(out)), **arrays)
        if reconstruction is not None:
            info = {**json.loads(arrays["info"]), "mode": "reconstruction", "k": 1, "taken_from": str(out)}
            np.savez(pending.enter_context(atomic_path(reconstruction)),
                     **{**arrays, "generated": arrays["generated"][:, :1], "info": json.dumps(info)})


def read_generation(path: str | Path) -> dict:
    """Load a generation file written by :func:`run_generation`."""
    try:
        with np.load(path) as z:
            arrays = {key: z[key] for key in z.files}
    except (OSError, ValueError) as err:
        raise InputError(path, f"not a generation file ({err})") from err
    missing = {"generated", "original", "mask", "case", "slice"} - set(arrays)
    if missing:
        raise InputError(path, f"not a generation file (missing {sorted(missing)})")
    arrays["info"] = json.loads(str(arrays["info"]))
    return arrays


def first_column_title(info: dict) -> str:
    """What a generation file's ``original`` slices are: ``Original``, or for a multi-modal run the source
    modality's slices the masks come from, ``CT (source)``.

    Args:
        info: the file's ``info`` (parsed).

    Returns:
        The title of the column that shows them.
    """
    if info["mode"] != "multimodal":
        return "Original"
    return f"{info.get('source', '').upper() or 'Source'} (source)"


def _grids(arrays: dict, label_map: LabelMap, grid: str | Path, reconstruction_grid: str | Path | None,
           title: str) -> None:
    """The PNG grid of a generation file (and of the reconstruction taken from it); the first column is titled
    by :func:`first_column_title`."""
    info = json.loads(arrays["info"])
    mode, first = info["mode"], first_column_title(info)
    generation_grid_figure(arrays["original"], arrays["mask"], arrays["generated"], label_map, grid,
                           f"{mode.replace('_', '-')}: {title}", original_title=first)
    if reconstruction_grid is not None:
        generation_grid_figure(arrays["original"], arrays["mask"], arrays["generated"][:, :1], label_map,
                               reconstruction_grid, f"reconstruction: {title}", original_title=first)


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
    _grids(arrays, job.labels, job.grid, job.reconstruction_grid, job.title)


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


def _subset_digest(case: np.ndarray, view: np.ndarray, slice_index: np.ndarray) -> str:
    """A fingerprint of an ordered list of slices (case/view/slice)."""
    keys = "\n".join(f"{c}/{v}/{int(s)}" for c, v, s in zip(case, view, slice_index))
    return hashlib.sha256(keys.encode()).hexdigest()


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
            "subset": _subset_digest(store.case[index], store.view[index], store.slice[index]),
            "dropped": [[i, str(store.case[index[i]]), str(store.view[index[i]]), int(store.slice[index[i]])]
                        for i in dropped]}
    _write_generation({**arrays, "part": json.dumps(part)}, job.out)


def _read_part(path: Path) -> dict:
    """A chunk file's small entries (not the images): part record, info, seed, case, slice, view."""
    try:
        with np.load(path) as z:
            if "part" not in z.files:
                raise InputError(path, "not a sampling chunk (no 'part' record; chunk files are written by sample_chunk)")
            return {"path": path, "part": json.loads(str(z["part"])), "info": json.loads(str(z["info"])),
                    "seed": int(z["seed"]), "case": z["case"], "slice": z["slice"], "view": z["view"]}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        raise InputError(path, f"not a sampling chunk ({err})") from err


def _check_parts(parts: list[dict]) -> list[dict]:
    """The parts in subset order, once checked to be the pieces of one subset sampled one way."""
    ref = parts[0]
    for p in parts[1:]:
        for what, mine, theirs in (
            ("the seed", p["seed"], ref["seed"]),
            *((f"info '{key}'", p["info"].get(key), ref["info"].get(key))
              for key in dict.fromkeys([*ref["info"], *p["info"]])
              if key not in ("classes_set_to_background", "dropped_empty")),
            ("the chunk count", p["part"]["chunks"], ref["part"]["chunks"]),
            ("the subset size", p["part"]["total"], ref["part"]["total"]),
        ):
            if mine != theirs:
                raise InputError(p["path"], f"{what} ({mine!r}) differs from that of {ref['path']} ({theirs!r}): "
                                            "the parts of one run come from one model, sampler and test subset")
        if p["part"]["subset"] != ref["part"]["subset"]:
            raise InputError(p["path"], f"cut from another test subset than {ref['path']} (other slice stores or "
                                        "evaluation.max_slices): the parts of one run come from one test subset")
    by_chunk: dict[int, dict] = {}
    for p in parts:
        other = by_chunk.setdefault(p["part"]["chunk"], p)
        if other is not p:
            raise InputError(p["path"], f"chunk {p['part']['chunk'] + 1} of {p['part']['chunks']} given twice "
                                        f"(also {other['path']})")
    chunks, total = ref["part"]["chunks"], ref["part"]["total"]
    ordered = [by_chunk[c] for c in sorted(by_chunk)]
    position = 0
    for p in ordered:
        start, stop = p["part"]["start"], p["part"]["stop"]
        dropped = p["part"].get("dropped", [])
        if len(p["case"]) + len(dropped) != stop - start or len(dropped) != p["info"].get("dropped_empty", 0):
            raise InputError(p["path"], f"holds {len(p['case'])} slices and lists {len(dropped)} dropped "
                                        f"({p['info'].get('dropped_empty', 0)} by its info), its record says "
                                        f"{start}..{stop - 1}")
        if start != position:
            gap = "missing" if start > position else "sampled twice"
            raise InputError(p["path"], f"chunk {p['part']['chunk'] + 1} of {chunks} starts at subset slice {start}, "
                                        f"the parts before it end at {position}: subset slices {min(start, position)}.."
                                        f"{max(start, position) - 1} are {gap}")
        position = stop
    missing = sorted(set(range(chunks)) - set(by_chunk))
    if position != total or missing:
        raise InputError(ordered[-1]["path"], f"the parts given end at subset slice {position} of {total}: chunk(s) "
                                              f"{[c + 1 for c in missing]} of {chunks} missing")
    digest = _subset_digest(*(np.concatenate([_part_keys(p)[key] for p in ordered]) for key in ("case", "view", "slice")))
    if digest != ref["part"]["subset"]:
        raise InputError(ref["path"], "the slices of the parts are not the subset they record")
    return ordered


def _part_keys(p: dict) -> dict[str, np.ndarray]:
    """A part's case/view/slice of every subset position start..stop-1: its slices with the dropped ones put back."""
    start, stop = p["part"]["start"], p["part"]["stop"]
    dropped = {int(pos) - start: (case, view, int(index)) for pos, case, view, index in p["part"].get("dropped", [])}
    kept = iter(zip(p["case"], p["view"], p["slice"]))
    try:
        rows = [dropped[i] if i in dropped else next(kept) for i in range(stop - start)]
    except StopIteration:
        raise InputError(p["path"], f"its dropped slices are not positions {start}..{stop - 1} of the subset") from None
    case, view, index = zip(*rows) if rows else ((), (), ())
    return {"case": np.array(case, dtype=str), "view": np.array(view, dtype=str), "slice": np.array(index, dtype=np.int64)}


def merge_chunks(parts: Sequence[str | Path], out: str | Path, reconstruction: str | Path | None = None) -> dict:
    """Concatenate the chunk files of one run into its generation file ``out``, as the unsplit run writes them.

    The parts' ``classes_set_to_background`` are united and their ``dropped_empty`` summed; a multi-modal part
    that dropped slices holds fewer than its bounds, and the slices it lists as dropped count towards the
    subset the parts must make up. Memory: the merged arrays and one part.

    Args:
        parts: the chunk files of the run (:func:`sample_chunk`), given in any order (or a single path).
        out: the run's generation file to write.
        reconstruction: from a multi-inference run, the reconstruction file to write too (generation 1 of
            every mask; it appears together with ``out``); None: no such file.

    Returns:
        The merged arrays (``info`` as a JSON string).

    Raises:
        InputError: parts that do not fit together (another model, seed, k, sampler or subset; a chunk
            missing or given twice), naming the file.
        ValueError: no parts, or ``reconstruction`` from a run that is not multi-inference.
    """
    parts = [parts] if isinstance(parts, (str, Path)) else list(parts)
    if not parts:
        raise ValueError("no chunk files to merge")
    ordered = _check_parts([_read_part(Path(p)) for p in parts])
    info = ordered[0]["info"]
    if reconstruction is not None and info["mode"] != "multi_inference":
        raise ValueError("a reconstruction file can only be taken from a multi-inference run")
    # organs set to background and slices dropped anywhere in the subset (each part knows only its own)
    info["classes_set_to_background"] = sorted({c for p in ordered for c in p["info"]["classes_set_to_background"]})
    if "dropped_empty" in info:
        info["dropped_empty"] = sum(p["info"].get("dropped_empty", 0) for p in ordered)
    total = sum(len(p["case"]) for p in ordered)
    arrays: dict = {}
    position = 0
    for p in ordered:
        start, stop = position, position + len(p["case"])
        with np.load(p["path"]) as z:
            for key in ("generated", "original", "mask"):
                piece = z[key]
                if key not in arrays:
                    arrays[key] = np.empty((total, *piece.shape[1:]), piece.dtype)
                if piece.shape[1:] != arrays[key].shape[1:]:
                    raise InputError(p["path"], f"'{key}' of shape {piece.shape[1:]} per slice, other parts "
                                                f"{arrays[key].shape[1:]}")
                arrays[key][start:stop] = piece
        position = stop
    for key in ("case", "slice", "view"):
        arrays[key] = np.concatenate([p[key] for p in ordered])
    arrays["seed"] = np.int64(ordered[0]["seed"])
    arrays["info"] = json.dumps(info)
    _write_generation(arrays, out, reconstruction)
    return arrays


def gather_run(job: GatherJob) -> None:
    """The workflow's gather job: :func:`merge_chunks`, then the PNG grids :func:`sample_run` draws.

    Args:
        job: the chunk files and the run's files.
    """
    arrays = merge_chunks(job.parts, job.out, job.reconstruction)
    _grids(arrays, job.labels, job.grid, job.reconstruction_grid, job.title)
